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
