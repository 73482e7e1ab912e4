//! The built-in catalog of IM callback commands (`shared/callbacks.md` §2.1–2.10).
//!
//! It answers two questions for the request path: is a command a decision or a
//! notification, and which top-level body fields can the gateway count on.
//! A wrongly required field makes the gateway reject a genuine callback (a lost
//! notification, or a decision that bypasses the app's policy), so the field
//! lists are deliberately short: a field is listed only when the reference
//! shows it as a core field of the documented sample with no caveat. Fields
//! that are conditional, newer than some doc snapshots, known only from SDK
//! models, or that can legitimately be absent (optional in the API that
//! triggers the callback) are left out. Unknown fields are always accepted.

use std::collections::HashMap;
use std::sync::LazyLock;

/// Whether IM acts on the answer (decision) or ignores it (notification).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// IM waits for the answer and acts on its `ErrorCode`.
    Decision,
    /// IM ignores the answer.
    Notification,
}

/// The JSON type a required field must have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonType {
    /// A JSON string.
    Str,
    /// Any JSON number.
    Int,
    /// A JSON number, or a string of one or more ASCII decimal digits
    /// (IM's samples quote `EventTime` on many pages).
    IntOrStr,
    /// A JSON array (contents not checked).
    Arr,
    /// A JSON object (contents not checked).
    Obj,
}

impl JsonType {
    /// The wording used in error messages ("field X must be a ...").
    #[must_use]
    pub const fn describe(self) -> &'static str {
        match self {
            JsonType::Str => "string",
            JsonType::Int => "number",
            JsonType::IntOrStr => "number or numeric string",
            JsonType::Arr => "array",
            JsonType::Obj => "object",
        }
    }
}

/// A checked top-level body field (per event for [`Shape::Batch`]).
#[derive(Debug)]
pub struct Field {
    pub name: &'static str,
    pub ty: JsonType,
    /// Absent is an error. When false the field is only type-checked when
    /// present (`EventTime`, missing from older IM samples).
    pub required: bool,
}

/// How a command's body is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// One object that normally repeats `CallbackCommand`.
    Single,
    /// One object without `CallbackCommand` (`ContentCallback.ResultNotify`).
    NoCommand,
    /// `{"Events":[{...}, ...]}`; each event carries `CallbackCommand` and the
    /// command's `fields` (`Push.*`).
    Batch,
}

/// One catalog entry.
#[derive(Debug)]
pub struct Command {
    pub name: &'static str,
    pub kind: Kind,
    pub shape: Shape,
    pub fields: &'static [Field],
}

// ---- small const helpers that keep the table readable ----

const fn s(name: &'static str) -> Field {
    Field {
        name,
        ty: JsonType::Str,
        required: true,
    }
}
const fn i(name: &'static str) -> Field {
    Field {
        name,
        ty: JsonType::Int,
        required: true,
    }
}
const fn a(name: &'static str) -> Field {
    Field {
        name,
        ty: JsonType::Arr,
        required: true,
    }
}
const fn o(name: &'static str) -> Field {
    Field {
        name,
        ty: JsonType::Obj,
        required: true,
    }
}
/// `EventTime`: milliseconds (seconds for `Push.*`), number or numeric
/// string. Type-checked when present but never required: IM samples from
/// before 2022-12 lack it on many commands, and it carries nothing the
/// gateway needs.
const ET: Field = Field {
    name: "EventTime",
    ty: JsonType::IntOrStr,
    required: false,
};

const D: Kind = Kind::Decision;
const N: Kind = Kind::Notification;

const fn cmd(name: &'static str, kind: Kind, fields: &'static [Field]) -> Command {
    Command {
        name,
        kind,
        shape: Shape::Single,
        fields,
    }
}
const fn shaped(name: &'static str, kind: Kind, shape: Shape, fields: &'static [Field]) -> Command {
    Command {
        name,
        kind,
        shape,
        fields,
    }
}

/// Every command of `shared/callbacks.md` §2.1–2.10, in the document's order.
/// Field order is the order in which the first missing/mistyped one is reported.
pub static COMMANDS: &[Command] = &[
    // 2.1 Operations — 269/105418 sample; all four fields are the whole payload.
    cmd(
        "Alert.RequestOverLimit",
        N,
        &[s("ServiceName"), s("Command"), i("Request"), i("Limit")],
    ),
    // 2.2 Online status — 269/2570 sample; KickedDevice is conditional (Login only).
    cmd("State.StateChange", N, &[ET, o("Info")]),
    // 2.3 Profile & relationship chain — 269/76489, 1047/43468, 1047/43467 samples;
    // the four after-callbacks are documented from SDK types only: PairList alone.
    cmd(
        "Profile.CallbackPortraitSet",
        N,
        &[
            s("Operator_Account"),
            s("From_Account"),
            ET,
            a("ProfileItem"),
        ],
    ),
    cmd(
        "Sns.CallbackPrevFriendAdd",
        D,
        &[
            s("Requester_Account"),
            s("From_Account"),
            a("FriendItem"),
            s("AddType"),
            i("ForceAddFlags"),
            ET,
        ],
    ),
    cmd(
        "Sns.CallbackPrevFriendResponse",
        D,
        &[
            s("Requester_Account"),
            s("From_Account"),
            a("ResponseFriendItem"),
            ET,
        ],
    ),
    cmd("Sns.CallbackFriendAdd", N, &[a("PairList")]),
    cmd("Sns.CallbackFriendDelete", N, &[a("PairList")]),
    cmd("Sns.CallbackBlackListAdd", N, &[a("PairList")]),
    cmd("Sns.CallbackBlackListDelete", N, &[a("PairList")]),
    // 2.4 Follow — 269/118915 sample for FollowAdd; FollowDelete's shape is unknown.
    cmd(
        "Follow.CallbackAfterFollowAdd",
        N,
        &[s("From_Account"), a("FollowList"), ET],
    ),
    cmd("Follow.CallbackAfterFollowDelete", N, &[]),
    // 2.5 C2C — 1047/34364, 1047/34365, 269/61696, 1047/43466, 269/128223..128225,
    // 269/126475 samples. No EventTime on send/withdraw samples; OnlineOnlyFlag is
    // missing from an older send sample; ExtensionList / GroupReadInfo can be
    // empty-by-omission (clear operation / no group unread).
    cmd(
        "C2C.CallbackBeforeSendMsg",
        D,
        &[
            s("From_Account"),
            s("To_Account"),
            i("MsgSeq"),
            i("MsgRandom"),
            i("MsgTime"),
            s("MsgKey"),
            a("MsgBody"),
        ],
    ),
    cmd(
        "C2C.CallbackAfterSendMsg",
        N,
        &[
            s("From_Account"),
            s("To_Account"),
            i("MsgSeq"),
            i("MsgRandom"),
            i("MsgTime"),
            s("MsgKey"),
            a("MsgBody"),
            i("SendMsgResult"),
            s("ErrorInfo"),
            i("UnreadMsgNum"),
        ],
    ),
    cmd(
        "C2C.CallbackAfterMsgReport",
        N,
        &[
            s("Report_Account"),
            s("Peer_Account"),
            i("LastReadTime"),
            i("UnreadMsgNum"),
        ],
    ),
    cmd(
        "C2C.CallbackAfterMsgWithDraw",
        N,
        &[
            s("From_Account"),
            s("To_Account"),
            s("MsgKey"),
            i("UnreadMsgNum"),
        ],
    ),
    cmd(
        "C2C.CallbackAfterMsgReadReceipt",
        N,
        &[
            s("Operator_Account"),
            s("Peer_Account"),
            a("C2CMsgInfo"),
            ET,
        ],
    ),
    cmd(
        "C2C.CallbackAfterModifyMsg",
        N,
        &[
            s("Operator_Account"),
            s("From_Account"),
            s("To_Account"),
            i("MsgRandom"),
            i("MsgSeq"),
            i("MsgTime"),
            s("MsgKey"),
            a("MsgBody"),
            ET,
        ],
    ),
    cmd(
        "C2C.CallbackAfterC2CMsgExtension",
        N,
        &[
            s("From_Account"),
            s("To_Account"),
            s("MsgKey"),
            i("OperateType"),
            i("Seq"),
            ET,
        ],
    ),
    cmd("C2C.CallbackAfterMsgReadAll", N, &[s("Report_Account"), ET]),
    // 2.6 Group — 1047/3436x-3437x, 269/1619, 269/2661, 269/2930, 269/73141,
    // 269/76156, 269/78206, 269/10535x, 269/126476, 269/129193 samples.
    // Owner_Account/MemberList are left out where a group can be ownerless or
    // created without members (REST create_group); TopicId only for topics;
    // GroupAttr/ExtensionList can be empty-by-omission; OnlineOnlyFlag as in C2C.
    // Quota alarm, SendMsgException and TopicInfoChanged are SDK-only shapes.
    cmd("Group.CallbackOnDailyGroupQuotaAlarm", N, &[]),
    cmd(
        "Group.CallbackBeforeCreateGroup",
        D,
        &[s("Operator_Account"), s("Type"), s("Name"), ET],
    ),
    cmd(
        "Group.CallbackAfterCreateGroup",
        N,
        &[
            s("GroupId"),
            s("Operator_Account"),
            s("Type"),
            s("Name"),
            ET,
        ],
    ),
    cmd(
        "Group.CallbackBeforeApplyJoinGroup",
        D,
        &[s("GroupId"), s("Type"), s("Requestor_Account"), ET],
    ),
    cmd(
        "Group.CallbackBeforeInviteJoinGroup",
        D,
        &[
            s("GroupId"),
            s("Type"),
            s("Operator_Account"),
            a("DestinationMembers"),
            ET,
        ],
    ),
    cmd(
        "Group.CallbackAfterNewMemberJoin",
        N,
        &[
            s("GroupId"),
            s("Type"),
            s("JoinType"),
            s("Operator_Account"),
            a("NewMemberList"),
            ET,
        ],
    ),
    cmd(
        "Group.CallbackAfterMemberExit",
        N,
        &[
            s("GroupId"),
            s("Type"),
            s("ExitType"),
            s("Operator_Account"),
            a("ExitMemberList"),
            ET,
        ],
    ),
    cmd(
        "Group.CallbackBeforeSendMsg",
        D,
        &[
            s("GroupId"),
            s("Type"),
            s("From_Account"),
            s("Operator_Account"),
            i("Random"),
            a("MsgBody"),
            ET,
        ],
    ),
    cmd(
        "Group.CallbackAfterSendMsg",
        N,
        &[
            s("GroupId"),
            s("Type"),
            s("From_Account"),
            s("Operator_Account"),
            i("Random"),
            i("MsgSeq"),
            i("MsgTime"),
            a("MsgBody"),
            ET,
        ],
    ),
    cmd("Group.CallbackAfterGroupFull", N, &[s("GroupId"), ET]),
    cmd(
        "Group.CallbackAfterGroupDestroyed",
        N,
        &[s("GroupId"), s("Type"), s("Name"), ET],
    ),
    cmd(
        "Group.CallbackAfterGroupInfoChanged",
        N,
        &[s("GroupId"), s("Type"), s("Operator_Account"), ET],
    ),
    cmd(
        "Group.CallbackAfterRecallMsg",
        N,
        &[
            s("Operator_Account"),
            s("Type"),
            s("GroupId"),
            a("MsgSeqList"),
            ET,
        ],
    ),
    cmd(
        "Group.CallbackAfterModifyMsg",
        N,
        &[
            s("Operator_Account"),
            s("GroupId"),
            i("MsgSeq"),
            a("MsgBody"),
            ET,
        ],
    ),
    cmd(
        "Group.CallbackAfterGroupMsgExtension",
        N,
        &[s("GroupId"), i("MsgSeq"), i("OperateType"), i("Seq"), ET],
    ),
    cmd(
        "Group.CallbackOnMemberStateChange",
        N,
        &[s("GroupId"), s("EventType"), a("MemberList")],
    ),
    cmd("Group.CallbackSendMsgException", N, &[s("GroupId")]),
    cmd(
        "Group.CallbackBeforeCreateTopic",
        D,
        &[s("Operator_Account"), s("Type"), s("Name")],
    ),
    cmd(
        "Group.CallbackAfterCreateTopic",
        N,
        &[
            s("GroupId"),
            s("TopicId"),
            s("Operator_Account"),
            s("Type"),
            s("Name"),
        ],
    ),
    cmd(
        "Group.CallbackAfterTopicDestroyed",
        N,
        &[s("GroupId"), s("Type"), a("TopicIdList")],
    ),
    cmd("Group.CallbackAfterTopicInfoChanged", N, &[s("GroupId")]),
    cmd(
        "Group.CallbackAfterMemberFieldChanged",
        N,
        &[
            s("GroupId"),
            s("Type"),
            s("Operator_Account"),
            s("Modified_Account"),
            ET,
        ],
    ),
    cmd(
        "Group.CallbackAfterGroupAttrChanged",
        N,
        &[
            s("GroupId"),
            s("Type"),
            s("Operator_Account"),
            s("OptionType"),
            ET,
        ],
    ),
    cmd(
        "Group.CallbackAfterReadReceipt",
        N,
        &[s("GroupId"), s("Type"), a("GroupMsgReceiptList"), ET],
    ),
    cmd(
        "Group.CallbackAfterChangeGroupOwner",
        N,
        &[
            s("GroupId"),
            s("Type"),
            s("Operator_Account"),
            s("NewOwner_Account"),
            ET,
        ],
    ),
    // 2.7 Content moderation — 1047/78240 samples (short and long variants); only
    // the fields present in both and meaningful for every Scene.
    shaped(
        "ContentCallback.ResultNotify",
        N,
        Shape::NoCommand,
        &[s("Scene"), i("CtxcbResult"), s("CtxcbRequestId")],
    ),
    // 2.8 Robots — 269/90407 (1047/68952) and 269/89994 samples; the Chatbot
    // signal message is SDK-only.
    cmd(
        "Bot.OnC2CMessage",
        N,
        &[
            s("From_Account"),
            s("To_Account"),
            i("MsgSeq"),
            i("MsgRandom"),
            i("MsgTime"),
            s("MsgKey"),
            a("MsgBody"),
        ],
    ),
    cmd(
        "Bot.OnGroupMessage",
        N,
        &[
            s("GroupId"),
            s("Type"),
            s("From_Account"),
            s("Operator_Account"),
            i("Random"),
            i("MsgSeq"),
            i("MsgTime"),
            a("MsgBody"),
            a("AtRobots_Account"),
            ET,
        ],
    ),
    cmd("Chatbot.OnC2CSignalMessage", N, &[]),
    // 2.9 Official accounts — 269/102319, 269/102320, 1047/60803 and the §2.9 rows;
    // Owner_Account left out as for groups, OnlineOnlyFlag as for C2C.
    cmd(
        "OfficialAccount.CallbackBeforeCreateOfficialAccount",
        D,
        &[s("Operator_Account"), s("Name"), ET],
    ),
    cmd(
        "OfficialAccount.CallbackAfterCreateOfficialAccount",
        N,
        &[s("Operator_Account"), s("Official_Account"), s("Name"), ET],
    ),
    cmd(
        "OfficialAccount.CallbackAfterOfficialAccountInfoChanged",
        N,
        &[s("Official_Account"), s("Operator_Account"), ET],
    ),
    cmd(
        "OfficialAccount.CallbackAfterOfficialAccountDestroyed",
        N,
        &[s("Official_Account"), s("Name"), ET],
    ),
    cmd(
        "OfficialAccount.CallbackBeforeAddSubscriber",
        D,
        &[
            s("Official_Account"),
            s("Operator_Account"),
            a("SubscribeAccountList"),
            ET,
        ],
    ),
    cmd(
        "OfficialAccount.CallbackAfterAddSubscriber",
        N,
        &[
            s("Official_Account"),
            s("Operator_Account"),
            a("SubscribeAccountList"),
            ET,
        ],
    ),
    cmd(
        "OfficialAccount.CallbackAfterOfficialAccountFull",
        N,
        &[s("Official_Account"), ET],
    ),
    cmd(
        "OfficialAccount.CallbackAfterDeleteSubscriber",
        N,
        &[
            s("Official_Account"),
            s("Operator_Account"),
            a("SubscribeAccountList"),
            ET,
        ],
    ),
    cmd(
        "OfficialAccount.CallbackBeforeSendMsg",
        D,
        &[s("Official_Account"), a("MsgBody"), ET],
    ),
    cmd(
        "OfficialAccount.CallbackAfterSendMsg",
        N,
        &[
            s("Official_Account"),
            s("MsgKey"),
            i("MsgTime"),
            a("MsgBody"),
            ET,
        ],
    ),
    cmd(
        "OfficialAccount.CallbackAfterMsgWithDraw",
        N,
        &[s("Official_Account"), a("WithdrawMsgList"), ET],
    ),
    // 2.10 Push — 269/102567, 269/102568 (1047/67551) samples; per event, only
    // what every event of both kinds carries (EventTime in seconds here).
    shaped(
        "Push.OfflinePush",
        N,
        Shape::Batch,
        &[i("EventType"), ET, s("To_Account")],
    ),
    shaped(
        "Push.AllMemberPush",
        N,
        Shape::Batch,
        &[i("EventType"), s("TaskId"), ET, s("To_Account")],
    ),
];

static BY_NAME: LazyLock<HashMap<&'static str, &'static Command>> =
    LazyLock::new(|| COMMANDS.iter().map(|c| (c.name, c)).collect());

/// The catalog entry for an exact command name (case-sensitive, as IM sends it).
#[must_use]
pub fn lookup(name: &str) -> Option<&'static Command> {
    BY_NAME.get(name).copied()
}

/// The position of a catalog entry in `COMMANDS` (a table index for
/// per-command state); `None` for a `Command` not taken from it.
#[must_use]
pub fn index(command: &Command) -> Option<usize> {
    let offset = (command as *const Command as usize).checked_sub(COMMANDS.as_ptr() as usize)?;
    let i = offset / std::mem::size_of::<Command>().max(1);
    COMMANDS
        .get(i)
        .filter(|c| std::ptr::eq(*c, command))
        .map(|_| i)
}

/// The kind of any command: the catalog's, else guessed from the name
/// (`CallbackBefore` / `CallbackPrev` are decisions, everything else notifies).
#[must_use]
pub fn kind_by_name(name: &str) -> Kind {
    match lookup(name) {
        Some(c) => c.kind,
        None if name.contains("CallbackBefore") || name.contains("CallbackPrev") => Kind::Decision,
        None => Kind::Notification,
    }
}

#[cfg(test)]
mod tests {
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
            61,
            "callbacks.md §2.1–2.10 lists 61 commands"
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
        // not catalogued: name rule
        assert_eq!(kind_by_name("Room.CallbackBeforeEnterRoom"), Kind::Decision);
        assert_eq!(kind_by_name("Foo.CallbackPrevBar"), Kind::Decision);
        assert_eq!(
            kind_by_name("Call.CallbackAfterStartCall"),
            Kind::Notification
        );
        assert_eq!(
            kind_by_name("Live.CallbackAfterMemberStateChanged"),
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
}
