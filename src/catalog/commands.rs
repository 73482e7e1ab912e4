//! The table itself: every catalogued command, as data.

use super::{Command, D, ET, Family, N, Shape, a, cmd, i, o, s, shaped};

/// Every command of `shared/callbacks.md` §2.1–2.10 and §2.11's Live list, in
/// the document's order.
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
    )
    .answers(Family::PerFriend),
    cmd(
        "Sns.CallbackPrevFriendResponse",
        D,
        &[
            s("Requester_Account"),
            s("From_Account"),
            a("ResponseFriendItem"),
            ET,
        ],
    )
    .answers(Family::PerFriend),
    cmd("Sns.CallbackFriendAdd", N, &[a("PairList")]),
    cmd("Sns.CallbackFriendDelete", N, &[a("PairList")]),
    cmd("Sns.CallbackBlackListAdd", N, &[a("PairList")]),
    cmd("Sns.CallbackBlackListDelete", N, &[a("PairList")]),
    // 2.4 Follow — 269/118915 sample for FollowAdd; FollowDelete's public
    // sample (647/74357, 1047/70356) lists the unfollowed accounts as strings.
    cmd(
        "Follow.CallbackAfterFollowAdd",
        N,
        &[s("From_Account"), a("FollowList"), ET],
    ),
    cmd(
        "Follow.CallbackAfterFollowDelete",
        N,
        &[s("From_Account"), a("To_Account"), ET],
    ),
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
    )
    .answers(Family::Message),
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
    )
    .answers(Family::Partial),
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
    )
    .answers(Family::Message),
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
    )
    .answers(Family::Partial),
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
    )
    .answers(Family::Message),
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
    // 2.11 Live (647/64413, 1071/78174): the notifications' bodies are not
    // documented field by field, so none is required. The gift decision's
    // sample has no EventTime; IM blocks the gift when no answer comes.
    // `Live.CallbackBeforeCallBackNotBlock` stays out: its wire format is not
    // public, and a guessed entry could reject genuine callbacks.
    cmd("Live.CallbackAfterCreateRoom", N, &[]),
    cmd("Live.CallbackAfterDestroyRoom", N, &[]),
    cmd("Live.CallbackAfterUpdateRoomInfo", N, &[]),
    cmd("Live.CallbackAfterSetMetadata", N, &[]),
    cmd("Live.CallbackAfterDelMetadata", N, &[]),
    cmd("Live.CallbackAfterCreateRoomReachingThreshold", N, &[]),
    cmd("Live.CallbackAfterMemberStateChanged", N, &[]),
    cmd("Live.CallbackAfterChangeOwner", N, &[]),
    cmd("Live.CallbackAfterModifyAdmin", N, &[]),
    cmd("Live.CallbackAfterCreateBattle", N, &[]),
    cmd("Live.CallbackAfterStartBattle", N, &[]),
    cmd("Live.CallbackAfterEndBattle", N, &[]),
    cmd(
        "Live.CallbackBeforeSendGift",
        D,
        &[s("Operator_Account"), s("RoomId"), o("GiftWater")],
    )
    .failing_closed(),
];
