//! The `upstreams:` section: URLs (credentials taken out of them, see
//! `config::url`), timeouts and TLS files.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::super::schema::RawConfig;
use super::super::{Upstream, url};
use super::Problems;

pub(super) fn upstreams(
    raw: &RawConfig,
    base: &Path,
    p: &mut Problems<'_>,
    warnings: &mut Vec<String>,
) -> BTreeMap<String, Upstream> {
    let mut out = BTreeMap::new();
    for (name, u) in &raw.upstreams {
        let what = format!("upstreams.{name}");
        let Some(expanded) = p.expanded(&format!("{what}.url"), &u.url) else {
            continue;
        };
        let (url, credentials) = match url::parse(&expanded) {
            Ok(parsed) => parsed,
            Err(e) => {
                // Quoted as written, never as expanded, credentials cut.
                p.add(format!("{what}.url: {:?} {e}", url::safe_template(&u.url)));
                continue;
            }
        };
        let timeout = u
            .timeout
            .as_deref()
            .map(|t| p.duration(&format!("{what}.timeout"), Some(t), Duration::ZERO));
        if timeout == Some(Duration::ZERO) {
            p.add(format!("{what}.timeout: must be above 0"));
        }
        let up = Upstream {
            name: name.clone(),
            timeout,
            ca: u
                .ca
                .as_ref()
                .map(|c| p.path(&format!("{what}.ca"), base, c)),
            client_cert: u
                .client_cert
                .as_ref()
                .map(|c| p.path(&format!("{what}.client_cert"), base, c)),
            client_key: u
                .client_key
                .as_ref()
                .map(|c| p.path(&format!("{what}.client_key"), base, c)),
            url,
            credentials,
        };
        let identity = match (&up.client_cert, &up.client_key) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            (None, None) => None,
            _ => {
                p.add(format!("{what}: client_cert and client_key go together"));
                None
            }
        };
        if (up.url.uri().scheme_str() == Some("https") || up.ca.is_some() || identity.is_some())
            && let Err(e) = crate::tls::client_config(up.ca.as_deref(), identity)
        {
            p.add(format!("{what}: {e}"));
        }
        if let Some(w) = up
            .client_key
            .as_deref()
            .and_then(crate::tls::loose_key_permissions)
        {
            warnings.push(format!("{what}.client_key: {w}"));
        }
        out.insert(name.clone(), up);
    }
    out
}
