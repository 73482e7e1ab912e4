//! The answer model's tests: tables whose rows name the SPEC rule they
//! check, and property tests over random answers.

use super::*;

mod combine;
mod deadline;
mod fallback;
mod mirror;
mod props;
mod verdict;

const FAMILIES: [Family; 4] = [
    Family::Message,
    Family::Partial,
    Family::PerFriend,
    Family::Plain,
];

fn deny(code: i64, info: &str) -> Verdict {
    Verdict::Deny {
        code,
        info: info.to_owned(),
    }
}

fn rewrite(msg_body: Option<&str>, cloud_custom_data: Option<&str>, info: &str) -> Verdict {
    let raw = |t: &str| RawJson::parse(t).expect("JSON");
    Verdict::Rewrite(Rewrite {
        msg_body: msg_body.map(raw),
        cloud_custom_data: cloud_custom_data.map(raw),
        info: info.to_owned(),
    })
}

fn refused(field: RefusedField, accounts: &[&str], info: &str) -> Verdict {
    Verdict::Partial(Refused {
        field,
        accounts: accounts.iter().map(|a| (*a).to_owned()).collect(),
        info: info.to_owned(),
    })
}

fn friends(items: &[(&str, i64, &str)]) -> Verdict {
    Verdict::PerFriend(
        items
            .iter()
            .map(|(account, code, info)| FriendResult {
                account: (*account).to_owned(),
                code: *code,
                info: (*info).to_owned(),
            })
            .collect(),
    )
}
