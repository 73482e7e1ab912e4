//! Unit tests of `body`.

use super::*;
use crate::catalog::{COMMANDS, lookup};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::path::PathBuf;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/callbacks")
}

fn fixture(name: &str) -> Value {
    let path = fixture_dir().join(format!("{name}.json"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn spec(name: &str) -> &'static Command {
    lookup(name).unwrap_or_else(|| panic!("{name} not catalogued"))
}

fn check_value(v: &Value, name: &str) -> Result<(), BodyError> {
    let bytes = serde_json::to_vec(v).expect("serialize");
    check_body(&bytes, name, lookup(name))
}

fn check_str(body: &str, name: &str) -> Result<(), BodyError> {
    check_body(body.as_bytes(), name, lookup(name))
}

/// The object that carries the command's fields: the body, or event `idx`.
fn target<'a>(v: &'a mut Value, c: &Command, idx: usize) -> &'a mut serde_json::Map<String, Value> {
    let obj = if c.shape == Shape::Batch {
        &mut v["Events"][idx]
    } else {
        v
    };
    obj.as_object_mut().expect("object")
}

fn field_name(c: &Command, idx: usize, field: &str) -> String {
    if c.shape == Shape::Batch {
        format!("Events[{idx}].{field}")
    } else {
        field.to_owned()
    }
}

fn missing(field: &str) -> Result<(), BodyError> {
    Err(BodyError::MissingField {
        field: field.to_owned(),
    })
}

fn mistyped(field: &str, expected: &'static str) -> Result<(), BodyError> {
    Err(BodyError::MistypedField {
        field: field.to_owned(),
        expected,
    })
}

fn mismatch(found: &str) -> Result<(), BodyError> {
    Err(BodyError::CommandMismatch {
        found: found.to_owned(),
    })
}

// ---- fixtures ----

#[test]
fn every_fixture_passes() {
    for c in COMMANDS {
        let path = fixture_dir().join(format!("{}.json", c.name));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(check_body(&bytes, c.name, Some(c)), Ok(()), "{}", c.name);
        // and as an unknown command (only the CallbackCommand check applies)
        assert_eq!(check_body(&bytes, c.name, None), Ok(()), "{}", c.name);
    }
}

#[test]
fn every_fixture_file_is_a_catalog_command_with_its_shape() {
    let mut count = 0;
    for entry in std::fs::read_dir(fixture_dir()).expect("fixture dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
            .unwrap_or_else(|| panic!("unexpected file {}", path.display()));
        let c = spec(name);
        let v = fixture(name);
        match c.shape {
            Shape::Single => assert_eq!(v["CallbackCommand"], json!(name)),
            Shape::NoCommand => assert!(v.get("CallbackCommand").is_none()),
            Shape::Batch => {
                let events = v["Events"].as_array().expect("Events");
                assert_eq!(events.len(), 2, "{name}");
                for e in events {
                    assert_eq!(e["CallbackCommand"], json!(name));
                }
            }
        }
        count += 1;
    }
    assert_eq!(count, COMMANDS.len());
}

#[test]
fn fixtures_use_both_eventtime_forms() {
    let (mut numbers, mut strings) = (0, 0);
    for c in COMMANDS {
        let v = fixture(c.name);
        let objs: Vec<&Value> = match c.shape {
            Shape::Batch => v["Events"].as_array().expect("Events").iter().collect(),
            _ => vec![&v],
        };
        for o in objs {
            match o.get("EventTime") {
                Some(Value::Number(_)) => numbers += 1,
                Some(Value::String(_)) => strings += 1,
                _ => {}
            }
        }
    }
    assert!(
        numbers >= 10 && strings >= 10,
        "{numbers} numbers, {strings} strings"
    );
}

// ---- every required field of every command ----

#[test]
fn removing_a_field_is_reported_by_name_when_required() {
    for c in COMMANDS {
        for f in c.fields {
            let idx = if c.shape == Shape::Batch { 1 } else { 0 };
            let mut v = fixture(c.name);
            assert!(
                target(&mut v, c, idx).remove(f.name).is_some(),
                "{} {}",
                c.name,
                f.name
            );
            let expected = if f.required {
                missing(&field_name(c, idx, f.name))
            } else {
                Ok(())
            };
            assert_eq!(check_value(&v, c.name), expected, "{} {}", c.name, f.name);
        }
    }
}

fn wrong_values(ty: JsonType) -> Vec<Value> {
    let mut v = match ty {
        JsonType::Str => vec![json!(12345), json!(["x"]), json!({"a": "b"}), json!(true)],
        JsonType::Int => vec![json!("12"), json!([1]), json!({}), json!(false)],
        JsonType::IntOrStr => vec![
            json!("abc"),
            json!(""),
            json!("12a"),
            json!("-1"),
            json!([1]),
            json!(true),
        ],
        JsonType::Arr => vec![json!({}), json!("[]"), json!(0)],
        JsonType::Obj => vec![json!([]), json!("{}"), json!(0)],
    };
    v.push(Value::Null);
    v
}

#[test]
fn mistyping_any_required_field_is_reported_by_name() {
    for c in COMMANDS {
        for f in c.fields {
            for idx in if c.shape == Shape::Batch {
                vec![0, 1]
            } else {
                vec![0]
            } {
                for wrong in wrong_values(f.ty) {
                    let mut v = fixture(c.name);
                    target(&mut v, c, idx).insert(f.name.to_owned(), wrong.clone());
                    assert_eq!(
                        check_value(&v, c.name),
                        mistyped(&field_name(c, idx, f.name), f.ty.describe()),
                        "{} {} = {wrong}",
                        c.name,
                        f.name
                    );
                }
            }
        }
    }
}

#[test]
fn first_problem_in_catalog_order_wins() {
    let c = spec("Group.CallbackAfterNewMemberJoin");
    assert!(c.fields.len() >= 3);
    // the last field mistyped, the second missing: the second is reported
    let mut v = fixture(c.name);
    let obj = target(&mut v, c, 0);
    obj.insert(c.fields[c.fields.len() - 1].name.to_owned(), json!(null));
    obj.remove(c.fields[1].name);
    assert_eq!(check_value(&v, c.name), missing(c.fields[1].name));
    // key order in the document does not matter
    let body = r#"{"EventTime":true,"CallbackCommand":"Group.CallbackAfterGroupFull"}"#;
    assert_eq!(
        check_str(body, "Group.CallbackAfterGroupFull"),
        missing("GroupId")
    );
}

// ---- leniency ----

#[test]
fn unknown_fields_pass() {
    for c in COMMANDS {
        let mut v = fixture(c.name);
        let o = v.as_object_mut().expect("object");
        o.insert(
            "SomeFutureField".into(),
            json!({"nested": [1, 2, {"x": null}]}),
        );
        o.insert("AnotherOne".into(), json!(null));
        if c.shape == Shape::Batch {
            for e in v["Events"].as_array_mut().expect("Events") {
                e.as_object_mut()
                    .expect("event")
                    .insert("NewEventField".into(), json!([true]));
            }
        }
        assert_eq!(check_value(&v, c.name), Ok(()), "{}", c.name);
    }
}

#[test]
fn eventtime_number_or_numeric_string() {
    let mut checked = 0;
    for c in COMMANDS {
        if !c.fields.iter().any(|f| f.name == "EventTime") {
            continue;
        }
        let idx = if c.shape == Shape::Batch { 1 } else { 0 };
        let et = field_name(c, idx, "EventTime");
        for (value, ok) in [
            (json!(1670574414123u64), true),
            (json!("1670574414123"), true),
            (json!(0), true),
            (json!(1.5e12), true),
            (json!("abc"), false),
            (json!("1670574414123ms"), false),
            (json!(" 1670574414123"), false),
            (json!("1.5"), false),
        ] {
            let mut v = fixture(c.name);
            target(&mut v, c, idx).insert("EventTime".into(), value.clone());
            let expected = if ok {
                Ok(())
            } else {
                mistyped(&et, "number or numeric string")
            };
            assert_eq!(
                check_value(&v, c.name),
                expected,
                "{} EventTime={value}",
                c.name
            );
        }
        checked += 1;
    }
    assert!(checked > 30);
    // where EventTime is not required, anything goes
    let body = r#"{"CallbackCommand":"C2C.CallbackAfterMsgWithDraw","From_Account":"a","To_Account":"b",
        "MsgKey":"1_2_3","UnreadMsgNum":0,"EventTime":"abc"}"#;
    assert_eq!(check_str(body, "C2C.CallbackAfterMsgWithDraw"), Ok(()));
}

#[test]
fn nested_values_are_not_inspected() {
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let body = format!(
        r#"{{"CallbackCommand":"Group.CallbackAfterGroupFull","GroupId":"g","EventTime":1,"X":{deep},"Y":{{"a":{deep}}}}}"#
    );
    assert_eq!(check_str(&body, "Group.CallbackAfterGroupFull"), Ok(()));
    // a required array may hold anything
    let body = format!(
        r#"{{"CallbackCommand":"Sns.CallbackFriendDelete","PairList":[{deep},1,"x",null,{{}}]}}"#
    );
    assert_eq!(check_str(&body, "Sns.CallbackFriendDelete"), Ok(()));
}

#[test]
fn escaped_keys_and_values_are_decoded() {
    let body = r#"{"Callback\u0043ommand":"Group.Callback\u0041fterGroupFull","Group\u0049d":"g\"1","EventTime":"1\u0032"}"#;
    assert_eq!(check_str(body, "Group.CallbackAfterGroupFull"), Ok(()));
    let body =
        r#"{"CallbackCommand":"Group.CallbackAfterGroupFull","Group\u0049d":7,"EventTime":1}"#;
    assert_eq!(
        check_str(body, "Group.CallbackAfterGroupFull"),
        mistyped("GroupId", "string")
    );
}

#[test]
fn duplicate_keys_are_all_checked() {
    let name = "Group.CallbackAfterGroupFull";
    let body = format!(r#"{{"CallbackCommand":"{name}","GroupId":"g","GroupId":1,"EventTime":1}}"#);
    assert_eq!(check_str(&body, name), mistyped("GroupId", "string"));
    let body =
        format!(r#"{{"CallbackCommand":"{name}","GroupId":null,"GroupId":"g","EventTime":1}}"#);
    assert_eq!(check_str(&body, name), mistyped("GroupId", "string"));
    let body = format!(
        r#"{{"CallbackCommand":"{name}","CallbackCommand":"Other","GroupId":"g","EventTime":1}}"#
    );
    assert_eq!(check_str(&body, name), mismatch("Other"));
    let body =
        format!(r#"{{"CallbackCommand":"{name}","GroupId":"g","GroupId":"h","EventTime":1}}"#);
    assert_eq!(check_str(&body, name), Ok(()));
}

// ---- JSON / object / precedence ----

#[test]
fn not_json() {
    let name = "Group.CallbackAfterGroupFull";
    let good = format!(r#"{{"CallbackCommand":"{name}","GroupId":"g","EventTime":1}}"#);
    assert_eq!(check_str(&good, name), Ok(()));
    let cases: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"   \n\t ".to_vec(),
        good.as_bytes()[..good.len() - 1].to_vec(),
        good.as_bytes()[..10].to_vec(),
        format!("{good} x").into_bytes(),
        format!("{good}{{}}").into_bytes(),
        format!("{good},").into_bytes(),
        br#"{"GroupId":"g",}"#.to_vec(),
        br#"{"GroupId" "g"}"#.to_vec(),
        br#"{GroupId:"g"}"#.to_vec(),
        br#"{"GroupId":'g'}"#.to_vec(),
        br#"{"GroupId":"g","EventTime":01}"#.to_vec(),
        br#"{"X":"bad \q escape"}"#.to_vec(),
        b"{\"X\":\"raw\ncontrol\"}".to_vec(),
        b"{\"X\":\"\xff\xfe\"}".to_vec(),
        b"{\"\xc3\x28\":1}".to_vec(),
        b"\xef\xbb\xbf{}".to_vec(), // BOM
        b"\xff".to_vec(),
        b"[1,2".to_vec(),
        b"nul".to_vec(),
        b"{\"X\":[1,2}".to_vec(),
    ];
    for body in cases {
        assert_eq!(
            check_body(&body, name, lookup(name)),
            Err(BodyError::NotJson),
            "{:?}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(check_body(&body, name, None), Err(BodyError::NotJson));
    }
}

#[test]
fn not_object() {
    let name = "Group.CallbackAfterGroupFull";
    for body in [
        "[]",
        " [1,{\"a\":2}] ",
        "\"str\"",
        "5",
        "-1.5e3",
        "null",
        "true",
        "\n[\"{\"]\n",
    ] {
        assert_eq!(check_str(body, name), Err(BodyError::NotObject), "{body}");
        assert_eq!(
            check_body(body.as_bytes(), name, None),
            Err(BodyError::NotObject)
        );
        assert_eq!(
            check_str(body, "Push.OfflinePush"),
            Err(BodyError::NotObject),
            "{body}"
        );
    }
}

#[test]
fn precedence() {
    let name = "Group.CallbackBeforeSendMsg";
    // invalid JSON wins over a mismatch (anywhere in the document)
    assert_eq!(
        check_str(r#"{"CallbackCommand":"Other","#, name),
        Err(BodyError::NotJson)
    );
    assert_eq!(
        check_str(r#"{"CallbackCommand":"Other"} trailing"#, name),
        Err(BodyError::NotJson)
    );
    assert_eq!(
        check_str(r#"{"CallbackCommand":"Other","X":[1,]}"#, name),
        Err(BodyError::NotJson)
    );
    // a mismatch wins over missing fields, wherever it appears
    assert_eq!(
        check_str(r#"{"CallbackCommand":"Other"}"#, name),
        mismatch("Other")
    );
    assert_eq!(
        check_str(
            r#"{"GroupId":5,"Type":null,"CallbackCommand":"Other"}"#,
            name
        ),
        mismatch("Other")
    );
    // not a string counts as a mismatch
    assert_eq!(check_str(r#"{"CallbackCommand":5}"#, name), mismatch("5"));
    assert_eq!(
        check_str(r#"{"CallbackCommand":null}"#, name),
        mismatch("null")
    );
    assert_eq!(
        check_str(r#"{"CallbackCommand":["x"]}"#, name),
        mismatch("[...]")
    );
    assert_eq!(
        check_str(r#"{"CallbackCommand":{"a":1}}"#, name),
        mismatch("{...}")
    );
    // then missing fields; no CallbackCommand is fine
    assert_eq!(check_str(r#"{"GroupId":"g"}"#, name), missing("Type"));
    assert_eq!(check_str("{}", name), missing("GroupId"));
    // matching is exact
    assert_eq!(
        check_str(r#"{"CallbackCommand":"group.callbackbeforesendmsg"}"#, name),
        mismatch("group.callbackbeforesendmsg")
    );
}

#[test]
fn long_mismatch_text_is_truncated() {
    let long = "é".repeat(500);
    let body = format!(r#"{{"CallbackCommand":"{long}"}}"#);
    match check_str(&body, "State.StateChange") {
        Err(BodyError::CommandMismatch { found }) => {
            assert_eq!(found, format!("{}...", "é".repeat(MAX_FOUND_CHARS)));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn display_texts_name_the_field() {
    let cases = [
        (BodyError::NotJson, "body is not valid JSON"),
        (BodyError::NotObject, "body is not a JSON object"),
        (
            BodyError::CommandMismatch { found: "X".into() },
            "body CallbackCommand \"X\" does not match the query's",
        ),
        (
            BodyError::MissingField {
                field: "GroupId".into(),
            },
            "missing required field GroupId",
        ),
        (
            BodyError::MistypedField {
                field: "EventTime".into(),
                expected: JsonType::IntOrStr.describe(),
            },
            "field EventTime must be a number or numeric string",
        ),
        (
            BodyError::MistypedField {
                field: "Events".into(),
                expected: "array",
            },
            "field Events must be an array",
        ),
        (
            BodyError::MistypedField {
                field: "Info".into(),
                expected: "object",
            },
            "field Info must be an object",
        ),
        (
            BodyError::MistypedField {
                field: "Random".into(),
                expected: "number",
            },
            "field Random must be a number",
        ),
        (
            BodyError::MistypedField {
                field: "Type".into(),
                expected: "string",
            },
            "field Type must be a string",
        ),
    ];
    for (err, text) in cases {
        assert_eq!(err.to_string(), text);
    }
}

// ---- batches ----

#[test]
fn push_batches() {
    for name in ["Push.OfflinePush", "Push.AllMemberPush"] {
        let good = fixture(name);
        assert_eq!(check_value(&good, name), Ok(()));

        // an event with another command
        let mut v = good.clone();
        v["Events"][1]["CallbackCommand"] = json!("Push.Other");
        assert_eq!(check_value(&v, name), mismatch("Push.Other"));
        // ... which beats a missing field in an earlier event
        v["Events"][0]
            .as_object_mut()
            .expect("event")
            .remove("To_Account");
        assert_eq!(check_value(&v, name), mismatch("Push.Other"));

        // an event without CallbackCommand is fine
        let mut v = good.clone();
        v["Events"][0]
            .as_object_mut()
            .expect("event")
            .remove("CallbackCommand");
        assert_eq!(check_value(&v, name), Ok(()));

        // a top-level CallbackCommand is checked too
        let mut v = good.clone();
        v["CallbackCommand"] = json!(name);
        assert_eq!(check_value(&v, name), Ok(()));
        v["CallbackCommand"] = json!("Push.Other");
        assert_eq!(check_value(&v, name), mismatch("Push.Other"));

        // Events missing / not an array
        assert_eq!(check_str("{}", name), missing("Events"));
        assert_eq!(check_str(r#"{"events":[]}"#, name), missing("Events"));
        for not_array in ["{}", r#"{"0":{}}"#, "\"[]\"", "null", "1", "true"] {
            let body = format!(r#"{{"Events":{not_array}}}"#);
            assert_eq!(
                check_str(&body, name),
                mistyped("Events", "array"),
                "{body}"
            );
        }
        // duplicate Events: every occurrence is checked
        let body = r#"{"Events":[],"Events":null}"#;
        assert_eq!(check_str(body, name), mistyped("Events", "array"));

        // an event missing a field: named with its index
        let mut v = good.clone();
        v["Events"][1]
            .as_object_mut()
            .expect("event")
            .remove("To_Account");
        assert_eq!(check_value(&v, name), missing("Events[1].To_Account"));
        // the first faulty event wins
        v["Events"][0]["EventType"] = json!("1");
        assert_eq!(
            check_value(&v, name),
            mistyped("Events[0].EventType", "number")
        );

        // an event that is not an object
        let mut v = good.clone();
        v["Events"]
            .as_array_mut()
            .expect("Events")
            .push(json!("oops"));
        assert_eq!(check_value(&v, name), mistyped("Events[2]", "object"));
        let mut v = good.clone();
        v["Events"][0] = json!([{"CallbackCommand": name}]);
        assert_eq!(check_value(&v, name), mistyped("Events[0]", "object"));

        // an empty batch carries nothing to check
        assert_eq!(check_str(r#"{"Events":[]}"#, name), Ok(()));
        // required event fields are not required at the top level
        assert_eq!(check_str(r#"{"Events":[],"EventType":"x"}"#, name), Ok(()));
    }
}

#[test]
fn batch_of_100_events() {
    let name = "Push.OfflinePush";
    let one = fixture(name)["Events"][0].clone();
    let v = json!({ "Events": vec![one; 100] });
    assert_eq!(check_value(&v, name), Ok(()));
}

// ---- no-command shape, unknown commands ----

#[test]
fn content_callback_without_callback_command() {
    let name = "ContentCallback.ResultNotify";
    let v = fixture(name);
    assert!(v.get("CallbackCommand").is_none());
    assert_eq!(check_value(&v, name), Ok(()));
    let mut w = v.clone();
    w["CallbackCommand"] = json!(name);
    assert_eq!(check_value(&w, name), Ok(()));
    w["CallbackCommand"] = json!("C2C.CallbackAfterSendMsg");
    assert_eq!(check_value(&w, name), mismatch("C2C.CallbackAfterSendMsg"));
    // the short sample from the docs (no Ctxcb keywords/labels) passes
    let short = r#"{"Scene":"C2C","SdkAppId":1400187352,"From_Account":"jared",
        "ContactItem":{"ContactType":1,"To_Account":"Jonh"},"ContentType":"Text",
        "TextContent":["aaabbbccc","1234567"],"MsgID":"1434460578_4137340972_1661154487",
        "CtxcbResult":1,"CtxcbRequestId":"241ed925-4c56-4357-95dd-1e6e7798f214"}"#;
    assert_eq!(check_str(short, name), Ok(()));
}

#[test]
fn unknown_command_checks_only_the_top_level_command() {
    let q = "Room.CallbackAfterCreateRoom";
    assert!(lookup(q).is_none());
    for body in [
        "{}",
        r#"{"x":1,"GroupId":5,"EventTime":"abc"}"#,
        r#"{"CallbackCommand":"Room.CallbackAfterCreateRoom","RoomInfo":{}}"#,
        r#"{"Events":[{"CallbackCommand":"Other"}]}"#,
        r#"{"Events":7}"#,
    ] {
        assert_eq!(check_body(body.as_bytes(), q, None), Ok(()), "{body}");
    }
    assert_eq!(
        check_body(
            br#"{"CallbackCommand":"Room.CallbackAfterDestroyRoom"}"#,
            q,
            None
        ),
        mismatch("Room.CallbackAfterDestroyRoom")
    );
    assert_eq!(
        check_body(br#"{"CallbackCommand":1}"#, q, None),
        mismatch("1")
    );
    assert_eq!(check_body(b"[]", q, None), Err(BodyError::NotObject));
    assert_eq!(check_body(b"{", q, None), Err(BodyError::NotJson));
}

#[test]
fn commands_without_required_fields_accept_any_object() {
    for name in [
        "Live.CallbackAfterCreateRoom",
        "Chatbot.OnC2CSignalMessage",
        "Group.CallbackOnDailyGroupQuotaAlarm",
    ] {
        assert!(spec(name).fields.is_empty());
        assert_eq!(check_str("{}", name), Ok(()));
        assert_eq!(check_str(r#"{"EventTime":"abc"}"#, name), Ok(()));
    }
}

// ---- properties ----

fn extra_key() -> impl Strategy<Value = String> {
    "[A-Za-z_][A-Za-z0-9_]{0,20}|\\PC{0,12}".prop_filter("must not be a checked key", |k| {
        k != "CallbackCommand"
            && k != "Events"
            && !COMMANDS
                .iter()
                .any(|c| c.fields.iter().any(|f| f.name == k))
    })
}

fn extra_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<String>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e300f64..1e300).prop_map(Value::from),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..256),
        which in 0..COMMANDS.len(),
    ) {
        let c = &COMMANDS[which];
        let _ = check_body(&body, c.name, Some(c));
        let _ = check_body(&body, c.name, None);
    }

    #[test]
    fn json_like_bytes_never_panic(
        body in "[\\[\\]{}\",:0-9a-zA-Z\\\\ .eE+-]{0,64}",
        which in 0..COMMANDS.len(),
    ) {
        let c = &COMMANDS[which];
        let _ = check_body(body.as_bytes(), c.name, Some(c));
    }

    #[test]
    fn mutated_fixtures_never_panic(
        which in 0..COMMANDS.len(),
        cut in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let c = &COMMANDS[which];
        let mut body = serde_json::to_vec(&fixture(c.name)).expect("serialize");
        let at = cut.index(body.len());
        body[at] = byte;
        let _ = check_body(&body, c.name, Some(c));
        body.truncate(at);
        let _ = check_body(&body, c.name, Some(c));
    }

    #[test]
    fn fixture_with_extra_fields_is_accepted(
        which in 0..COMMANDS.len(),
        extras in proptest::collection::vec((extra_key(), extra_value()), 0..8),
    ) {
        let c = &COMMANDS[which];
        let mut v = fixture(c.name);
        for (k, x) in &extras {
            v.as_object_mut().expect("object").insert(k.clone(), x.clone());
            if c.shape == Shape::Batch {
                for e in v["Events"].as_array_mut().expect("Events") {
                    e.as_object_mut().expect("event").insert(k.clone(), x.clone());
                }
            }
        }
        prop_assert_eq!(check_value(&v, c.name), Ok(()));
    }

    #[test]
    fn extra_fields_appended_as_text_are_accepted(
        which in 0..COMMANDS.len(),
        extras in proptest::collection::vec((extra_key(), extra_value()), 1..8),
        pretty in any::<bool>(),
    ) {
        // inserted right after the opening brace, so they precede the
        // required fields in the document (serde_json's Map sorts keys)
        let c = &COMMANDS[which];
        let v = fixture(c.name);
        let text = if pretty {
            serde_json::to_string_pretty(&v).expect("serialize")
        } else {
            serde_json::to_string(&v).expect("serialize")
        };
        let mut prefix = String::from("{");
        for (k, x) in &extras {
            prefix.push_str(&serde_json::to_string(k).expect("key"));
            prefix.push(':');
            prefix.push_str(&x.to_string());
            prefix.push(',');
        }
        let body = text.replacen('{', &prefix, 1);
        prop_assert_eq!(check_str(&body, c.name), Ok(()));
    }
}
