//! Mirror comparison (SPEC 4.5, `policy: first`).

use super::*;
use Family::{Message, Partial, PerFriend, Plain};
use RefusedField::{Members, Subscribers};

#[test]
fn mirrors_compare_by_the_family_s_rules() {
    let rows = [
        (
            "allow vs allow",
            Plain,
            Verdict::Allow,
            Verdict::Allow,
            true,
        ),
        ("allow vs deny", Plain, Verdict::Allow, deny(1, ""), false),
        (
            "deny codes equal, infos differ",
            Plain,
            deny(1, "a"),
            deny(1, "b"),
            true,
        ),
        (
            "deny codes differ",
            Message,
            deny(1, ""),
            deny(120001, ""),
            false,
        ),
        (
            "discard vs discard",
            Message,
            Verdict::Discard { info: "a".into() },
            Verdict::Discard {
                info: String::new(),
            },
            true,
        ),
        (
            "discard vs deny",
            Message,
            Verdict::Discard {
                info: String::new(),
            },
            deny(2, ""),
            false,
        ),
        (
            "the same rewrite",
            Message,
            rewrite(Some("[1]"), None, "a"),
            rewrite(Some("[1]"), None, "b"),
            true,
        ),
        (
            "rewrite text differs",
            Message,
            rewrite(Some("[1]"), None, ""),
            rewrite(Some("[ 1 ]"), None, ""),
            false,
        ),
        (
            "rewrite of another field",
            Message,
            rewrite(Some("[1]"), None, ""),
            rewrite(Some("[1]"), Some(r#""c""#), ""),
            false,
        ),
        (
            "rewrite vs allow",
            Message,
            rewrite(None, Some(r#""c""#), ""),
            Verdict::Allow,
            false,
        ),
        (
            "refused accounts as a set",
            Partial,
            refused(Members, &["a", "b"], ""),
            refused(Subscribers, &["b", "a", "a"], "x"),
            true,
        ),
        (
            "refused accounts differ",
            Partial,
            refused(Members, &["a", "b"], ""),
            refused(Members, &["a"], ""),
            false,
        ),
        (
            "partial vs allow",
            Partial,
            refused(Members, &["a"], ""),
            Verdict::Allow,
            false,
        ),
        (
            "per-friend codes per account, order and infos aside",
            PerFriend,
            friends(&[("a", 0, "x"), ("b", 38001, "y")]),
            friends(&[("b", 38001, ""), ("a", 0, "")]),
            true,
        ),
        (
            "per-friend: a friend an answer lacks is 0",
            PerFriend,
            friends(&[("a", 0, ""), ("b", 38001, "")]),
            friends(&[("b", 38001, "")]),
            true,
        ),
        (
            "per-friend codes differ",
            PerFriend,
            friends(&[("b", 38001, "")]),
            friends(&[("b", 38002, "")]),
            false,
        ),
        (
            "per-friend refused vs allowed",
            PerFriend,
            friends(&[("b", 38001, "")]),
            friends(&[("b", 0, "")]),
            false,
        ),
        (
            "per-friend all zero vs allow",
            PerFriend,
            friends(&[("b", 0, "")]),
            Verdict::Allow,
            true,
        ),
        (
            "per-friend refusing vs allow",
            PerFriend,
            friends(&[("b", 1, "")]),
            Verdict::Allow,
            false,
        ),
    ];
    for (rule, family, primary, mirror, expected) in rows {
        assert_eq!(agree(family, &primary, &mirror), expected, "{rule}");
        assert_eq!(
            agree(family, &mirror, &primary),
            expected,
            "{rule} (swapped)"
        );
    }
}
