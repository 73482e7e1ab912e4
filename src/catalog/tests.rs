use super::*;
use std::collections::HashSet;

#[test]
fn index_finds_catalog_entries_only() {
    for (i, c) in COMMANDS.iter().enumerate() {
        assert_eq!(index(c), Some(i));
        assert_eq!(lookup(c.name).and_then(index), Some(i));
    }
    let copy = Command { ..COMMANDS[0] };
    assert_eq!(index(&copy), None);
}

#[test]
fn names_are_unique_and_cover_the_reference() {
    let names: HashSet<_> = COMMANDS.iter().map(|c| c.name).collect();
    assert_eq!(names.len(), COMMANDS.len(), "duplicate command name");
    assert_eq!(
        COMMANDS.len(),
        74,
        "callbacks.md §2.1–2.10 lists 61 commands, §2.11's Live list 13 more"
    );
}

#[test]
fn fields_fit_the_validator() {
    for c in COMMANDS {
        assert!(c.fields.len() <= 64, "{}: too many fields", c.name);
        let names: HashSet<_> = c.fields.iter().map(|f| f.name).collect();
        assert_eq!(names.len(), c.fields.len(), "{}: duplicate field", c.name);
        for f in c.fields {
            assert_ne!(f.name, "CallbackCommand", "{}", c.name);
            assert!(
                !(c.shape == Shape::Batch && f.name == "Events"),
                "{}",
                c.name
            );
        }
    }
}

#[test]
fn kinds_follow_the_naming_rule_for_catalogued_commands() {
    // The catalog's B/A/N agrees with the name rule for every documented
    // command, so routes without `kind:` behave the same either way.
    for c in COMMANDS {
        let by_rule = if c.name.contains("CallbackBefore") || c.name.contains("CallbackPrev") {
            Kind::Decision
        } else {
            Kind::Notification
        };
        assert_eq!(c.kind, by_rule, "{}", c.name);
    }
}

#[test]
fn shapes() {
    for c in COMMANDS {
        let expected = match c.name {
            "ContentCallback.ResultNotify" => Shape::NoCommand,
            n if n.starts_with("Push.") => Shape::Batch,
            _ => Shape::Single,
        };
        assert_eq!(c.shape, expected, "{}", c.name);
    }
}

#[test]
fn lookup_finds_exact_names_only() {
    let c = lookup("Group.CallbackBeforeSendMsg").expect("catalogued");
    assert_eq!(c.name, "Group.CallbackBeforeSendMsg");
    assert_eq!(c.kind, Kind::Decision);
    assert!(c.fields.iter().any(|f| f.name == "GroupId"));
    assert_eq!(
        lookup("Push.OfflinePush").map(|c| c.shape),
        Some(Shape::Batch)
    );
    assert!(lookup("group.callbackbeforesendmsg").is_none());
    assert!(lookup("Group.CallbackBeforeSendMsg ").is_none());
    assert!(lookup("").is_none());
    assert!(lookup("Room.CallbackAfterCreateRoom").is_none());
    // wire format unknown: deliberately left out
    assert!(lookup("Live.CallbackBeforeCallBackNotBlock").is_none());
    for c in COMMANDS {
        assert!(std::ptr::eq(lookup(c.name).expect("present"), c));
    }
}

#[test]
fn kind_by_name_uses_catalog_then_rule() {
    assert_eq!(kind_by_name("Sns.CallbackPrevFriendAdd"), Kind::Decision);
    assert_eq!(
        kind_by_name("Group.CallbackAfterNewMemberJoin"),
        Kind::Notification
    );
    assert_eq!(kind_by_name("State.StateChange"), Kind::Notification);
    assert_eq!(kind_by_name("Push.OfflinePush"), Kind::Notification);
    assert_eq!(
        kind_by_name("Live.CallbackAfterMemberStateChanged"),
        Kind::Notification
    );
    assert_eq!(kind_by_name("Live.CallbackBeforeSendGift"), Kind::Decision);
    // not catalogued: name rule
    assert_eq!(
        kind_by_name("Live.CallbackBeforeCallBackNotBlock"),
        Kind::Decision
    );
    assert_eq!(kind_by_name("Room.CallbackBeforeEnterRoom"), Kind::Decision);
    assert_eq!(kind_by_name("Foo.CallbackPrevBar"), Kind::Decision);
    assert_eq!(
        kind_by_name("Call.CallbackAfterStartCall"),
        Kind::Notification
    );
    assert_eq!(kind_by_name(""), Kind::Notification);
    assert_eq!(kind_by_name("callbackbefore"), Kind::Notification);
}

#[test]
fn kind_serde_is_lowercase() {
    assert_eq!(
        serde_json::to_string(&Kind::Decision).expect("serialize"),
        "\"decision\""
    );
    let k: Kind = serde_json::from_str("\"notification\"").expect("deserialize");
    assert_eq!(k, Kind::Notification);
}

#[test]
fn families_follow_spec_4_5() {
    let listed = [
        ("C2C.CallbackBeforeSendMsg", Family::Message),
        ("Group.CallbackBeforeSendMsg", Family::Message),
        ("OfficialAccount.CallbackBeforeSendMsg", Family::Message),
        ("Group.CallbackBeforeInviteJoinGroup", Family::Partial),
        (
            "OfficialAccount.CallbackBeforeAddSubscriber",
            Family::Partial,
        ),
        ("Sns.CallbackPrevFriendAdd", Family::PerFriend),
        ("Sns.CallbackPrevFriendResponse", Family::PerFriend),
    ];
    for c in COMMANDS {
        let expected = listed
            .iter()
            .find(|(name, _)| *name == c.name)
            .map_or(Family::Plain, |(_, f)| *f);
        assert_eq!(c.family, expected, "{}", c.name);
        assert_eq!(family_of(Some(c)), expected, "{}", c.name);
        if c.family != Family::Plain {
            assert_eq!(c.kind, Kind::Decision, "{}", c.name);
        }
    }
    for (name, _) in listed {
        assert!(lookup(name).is_some(), "{name}");
    }
    // uncatalogued commands are plain
    assert_eq!(family_of(None), Family::Plain);
    assert_eq!(
        family_of(lookup("Room.CallbackBeforeEnterRoom")),
        Family::Plain
    );
}

#[test]
fn family_names() {
    let names = [
        Family::Message,
        Family::Partial,
        Family::PerFriend,
        Family::Plain,
    ]
    .map(Family::as_str);
    assert_eq!(names, ["message", "partial", "per-friend", "plain"]);
}

#[test]
fn only_the_gift_decision_fails_closed() {
    let closed: Vec<_> = COMMANDS
        .iter()
        .filter(|c| c.fails_closed)
        .map(|c| c.name)
        .collect();
    assert_eq!(closed, ["Live.CallbackBeforeSendGift"]);
}

#[test]
fn live_and_follow_shapes() {
    let fields = |name: &str| -> Vec<(&str, JsonType, bool)> {
        lookup(name)
            .expect("catalogued")
            .fields
            .iter()
            .map(|f| (f.name, f.ty, f.required))
            .collect()
    };
    assert_eq!(
        fields("Live.CallbackBeforeSendGift"),
        [
            ("Operator_Account", JsonType::Str, true),
            ("RoomId", JsonType::Str, true),
            ("GiftWater", JsonType::Obj, true),
        ]
    );
    let live: Vec<_> = COMMANDS
        .iter()
        .filter(|c| c.name.starts_with("Live."))
        .collect();
    assert_eq!(live.len(), 13);
    for c in live {
        if c.kind == Kind::Notification {
            assert!(c.fields.is_empty(), "{}: undocumented fields", c.name);
        }
    }
    // §2.4: not the FollowAdd shape
    assert_eq!(
        fields("Follow.CallbackAfterFollowDelete"),
        [
            ("From_Account", JsonType::Str, true),
            ("To_Account", JsonType::Arr, true),
            ("EventTime", JsonType::IntOrStr, false),
        ]
    );
}
