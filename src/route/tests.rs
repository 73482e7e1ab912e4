//! Unit tests of `route`.

use super::*;
use proptest::prelude::*;

#[test]
fn exact_and_glob_patterns() {
    let p = Pattern::new("Group.CallbackAfter*");
    assert!(p.matches("Group.CallbackAfterNewMemberJoin"));
    assert!(p.matches("Group.CallbackAfter"));
    assert!(!p.matches("Group.CallbackBeforeSendMsg"));
    assert!(!p.matches("C2C.CallbackAfterSendMsg"));
    assert!(Pattern::new("*").matches(""));
    assert!(Pattern::new("*").matches("anything.at.all"));
    assert!(Pattern::new("*.CallbackBefore*").matches("C2C.CallbackBeforeSendMsg"));
    assert!(!Pattern::new("*.CallbackBefore*").matches("C2C.CallbackAfterSendMsg"));
    assert!(Pattern::new("a*b*a").matches("aba"));
    assert!(!Pattern::new("a*a").matches("a"));
    assert!(Pattern::new("Sns.CallbackFriendAdd").matches("Sns.CallbackFriendAdd"));
    assert!(!Pattern::new("Sns.CallbackFriendAdd").matches("Sns.CallbackFriendAddX"));
}

/// Reference matcher: plain backtracking, obviously correct and slow.
fn reference(p: &[char], t: &[char]) -> bool {
    match (p.first(), t.first()) {
        (None, None) => true,
        (None, Some(_)) => false,
        (Some('*'), _) => reference(&p[1..], t) || (!t.is_empty() && reference(p, &t[1..])),
        (Some(c), Some(d)) => c == d && reference(&p[1..], &t[1..]),
        (Some(_), None) => false,
    }
}

proptest! {
    #[test]
    fn glob_agrees_with_reference(p in "[ab.*]{0,8}", t in "[ab.é]{0,10}") {
        let pc: Vec<char> = p.chars().collect();
        let tc: Vec<char> = t.chars().collect();
        prop_assert_eq!(Pattern::new(&p).matches(&t), reference(&pc, &tc));
    }
}

fn table(defaults: &str, routes: &str) -> RouteTable {
    let yaml = format!(
        "listeners:\n  - addr: \"127.0.0.1:0\"\napps:\n  - sdkappid: 1\n{defaults}upstreams:\n  a:\n    url: \"http://127.0.0.1:9/\"\nroutes:\n{routes}"
    );
    let config = Config::parse(&yaml, std::path::Path::new("/tmp/routes.yaml")).unwrap();
    RouteTable::new(&config)
}

/// SPEC 4.5, which fallback: the route's `on_timeout`, else deny for the
/// commands IM fails closed on, else `defaults.on_timeout`.
#[test]
fn the_fallback_is_the_routes_else_the_catalogs_else_the_default() {
    let gift = "Live.CallbackBeforeSendGift";
    let send = "Group.CallbackBeforeSendMsg";
    let all = "  - match: \"*\"\n    upstreams: [a]\n";
    let t = table("", all);
    assert_eq!(t.route(gift, 1).on_timeout, OnTimeout::Deny);
    assert_eq!(t.route(send, 1).on_timeout, OnTimeout::Allow);
    let t = table(
        "",
        "  - match: \"Live.*\"\n    upstreams: [a]\n    on_timeout: allow\n",
    );
    assert_eq!(t.route(gift, 1).on_timeout, OnTimeout::Allow);
    // Unrouted: the catalog and the default still apply.
    assert_eq!(t.route(send, 1).on_timeout, OnTimeout::Allow);
    let t = table("defaults:\n  on_timeout: deny\n", all);
    assert_eq!(t.route(send, 1).on_timeout, OnTimeout::Deny);
    let t = table("", "  - match: \"Group.*\"\n    upstreams: [a]\n");
    assert!(t.route(gift, 1).route.is_none());
    assert_eq!(t.route(gift, 1).on_timeout, OnTimeout::Deny);
}
