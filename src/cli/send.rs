//! `callgate send`: acts as the IM backend for smoke tests. Sends one
//! callback with IM's query parameters (and Sign when given a token),
//! optionally presenting a client certificate, and prints the answer.

use std::io::Read as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Args;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::catalog::{self, JsonType, Shape};
use crate::validate::expected_sign;

#[derive(Args, Debug)]
pub struct SendArgs {
    /// Callback URL of the gateway, e.g. http://127.0.0.1:8080/im/callback
    #[arg(long)]
    pub url: String,
    #[arg(long)]
    pub sdkappid: u64,
    /// CallbackCommand, e.g. Group.CallbackBeforeSendMsg
    #[arg(long)]
    pub command: String,
    /// JSON body file, or - for standard input [default: a minimal valid body for the command]
    #[arg(long)]
    pub body: Option<PathBuf>,
    /// App token: adds RequestTime and Sign
    #[arg(long, env = "CALLGATE_SEND_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Client certificate (PEM) to present, for mutual TLS
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of --cert
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// CA (PEM) to trust for the gateway's certificate [default: public roots]
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Give up after this long
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

pub async fn send(args: SendArgs) -> anyhow::Result<()> {
    let body = match &args.body {
        None => Bytes::from(sample_body(&args.command).to_string()),
        Some(p) if p.as_os_str() == "-" => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("cannot read the body from standard input")?;
            Bytes::from(buf)
        }
        Some(p) => {
            Bytes::from(std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?)
        }
    };
    let url = callback_url(&args)?;
    let identity = args.cert.as_deref().zip(args.key.as_deref());
    let tls = crate::tls::client_config(args.ca.as_deref(), identity)?;
    let https = crate::tls::https_connector(tls, HttpConnector::new());
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let request = Request::builder()
        .method(Method::POST)
        .uri(&url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .context("cannot build the request")?;
    let exchange = async {
        let response = client.request(request).await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, headers, body))
    };
    let (status, headers, body) = tokio::time::timeout(args.timeout, exchange)
        .await
        .map_err(|_| anyhow::anyhow!("no answer from {} within {:?}", args.url, args.timeout))?
        .map_err(|e| {
            anyhow::anyhow!(
                "request to {} failed: {}",
                args.url,
                crate::common::chain(&*e)
            )
        })?;
    out!("HTTP {status}");
    for name in [
        crate::respond::OUTCOME_HEADER,
        crate::respond::REQUEST_ID_HEADER,
    ] {
        if let Some(v) = headers.get(&name).and_then(|v| v.to_str().ok()) {
            out!("{name}: {v}");
        }
    }
    out!("{}", String::from_utf8_lossy(&body));
    Ok(())
}

/// The URL with IM's query parameters appended to any it already has.
fn callback_url(args: &SendArgs) -> anyhow::Result<String> {
    if !(args.url.starts_with("http://") || args.url.starts_with("https://")) {
        bail!("--url must start with http:// or https://");
    }
    let mut query = form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("SdkAppid", &args.sdkappid.to_string())
        .append_pair("CallbackCommand", &args.command)
        .append_pair("contenttype", "json")
        .append_pair("ClientIP", "127.0.0.1")
        .append_pair("OptPlatform", "RESTAPI");
    if let Some(token) = &args.token {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .to_string();
        query
            .append_pair("RequestTime", &now)
            .append_pair("Sign", &expected_sign(token, &now));
    }
    let sep = if args.url.contains('?') { '&' } else { '?' };
    Ok(format!("{}{sep}{}", args.url, query.finish()))
}

/// A body the catalog accepts for `command`: its required fields with
/// placeholder values of the right JSON types.
pub fn sample_body(command: &str) -> serde_json::Value {
    use serde_json::{Map, Value, json};
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut fields = Map::new();
    if let Some(spec) = catalog::lookup(command) {
        for f in spec.fields {
            let value = match f.ty {
                JsonType::Str => json!("callgate-send"),
                JsonType::Int => json!(0),
                JsonType::IntOrStr => json!(now_ms as u64),
                JsonType::Arr => json!([]),
                JsonType::Obj => json!({}),
            };
            fields.insert(f.name.to_owned(), value);
        }
        match spec.shape {
            Shape::Single => {
                fields.insert("CallbackCommand".into(), json!(command));
            }
            Shape::NoCommand => {}
            Shape::Batch => {
                fields.insert("CallbackCommand".into(), json!(command));
                return json!({ "Events": [Value::Object(fields)] });
            }
        }
        return Value::Object(fields);
    }
    json!({ "CallbackCommand": command, "EventTime": now_ms as u64 })
}
