//! Microbenchmarks of the per-request work: body validation, route lookup,
//! query parsing and Sign verification.
//!
//!     cargo bench --bench micro

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use callgate::catalog;
use callgate::route::RouteTable;
use callgate::validate::body::check_body;
use callgate::validate::{expected_sign, parse_query, verify_sign};
use divan::{Bencher, black_box};

fn main() {
    divan::main();
}

const CMD: &str = "Group.CallbackBeforeSendMsg";

/// A realistic Group.CallbackBeforeSendMsg body padded to about `kib` KiB
/// with more message elements.
fn body(kib: usize) -> Vec<u8> {
    let element = r#"{"MsgType":"TIMTextElem","MsgContent":{"Text":"hello, this is a message with some \"quoted\" text and 中文字符 in it"}}"#;
    let mut elements = vec![element; 1];
    let head = r#"{"CallbackCommand":"Group.CallbackBeforeSendMsg","GroupId":"@TGS#2J4SZEAEL","Type":"Public","From_Account":"leckie","Operator_Account":"leckie","Random":123456,"OnlineOnlyFlag":0,"TopicId":"","CloudCustomData":"your cloud custom data","EventTime":"1670574414123","MsgBody":["#;
    while head.len() + elements.len() * (element.len() + 1) < kib * 1024 {
        elements.push(element);
    }
    format!("{head}{}]}}", elements.join(",")).into_bytes()
}

#[divan::bench(args = [1, 16])]
fn validate_body(bencher: Bencher, kib: usize) {
    let body = body(kib);
    let spec = catalog::lookup(CMD);
    assert!(check_body(&body, CMD, spec).is_ok());
    bencher
        .counter(divan::counter::BytesCount::new(body.len()))
        .bench(|| check_body(black_box(&body), CMD, spec));
}

#[divan::bench]
fn route_lookup_100_routes(bencher: Bencher) {
    let mut yaml = String::from(
        "listeners:\n  - addr: \"127.0.0.1:0\"\napps:\n  - sdkappid: 1\nupstreams:\n  a:\n    url: \"http://127.0.0.1:9/\"\nroutes:\n",
    );
    for i in 0..99 {
        yaml.push_str(&format!(
            "  - match: \"Custom{i}.Callback*\"\n    upstreams: [a]\n"
        ));
    }
    yaml.push_str("  - match: \"*\"\n    upstreams: [a]\n");
    let config = callgate::Config::parse(&yaml, Path::new("/tmp/routes.yaml")).unwrap();
    let table = RouteTable::new(&config);
    assert_eq!(table.find(CMD, 1).map(|r| r.index), Some(99));
    bencher.bench(|| table.route(black_box(CMD), 1).kind);
}

#[divan::bench]
fn parse_query_string(bencher: Bencher) {
    let q = "SdkAppid=1400000001&CallbackCommand=Group.CallbackBeforeSendMsg&contenttype=json&ClientIP=1.2.3.4&OptPlatform=RESTAPI&RequestTime=1669872112&Sign=17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061";
    bencher.bench(|| parse_query(black_box(q)).map(|q| q.sdkappid));
}

#[divan::bench]
fn verify_sign_sha256(bencher: Bencher) {
    let now = UNIX_EPOCH + Duration::from_secs(1669872112);
    let sign = expected_sign("xxxxyyyy", "1669872112");
    bencher.bench(|| {
        verify_sign(
            "xxxxyyyy",
            Some(black_box("1669872112")),
            Some(black_box(&sign)),
            Duration::from_secs(60),
            now,
        )
    });
}
