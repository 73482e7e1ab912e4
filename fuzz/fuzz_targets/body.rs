//! The catalog validator on arbitrary bodies, for a decision, a
//! notification, a batch and a command outside the catalog.
#![no_main]

use callgate::catalog;
use callgate::validate::body::check_body;
use libfuzzer_sys::fuzz_target;

const COMMANDS: [&str; 5] = [
    "Group.CallbackBeforeSendMsg",
    "C2C.CallbackAfterSendMsg",
    "Push.OfflinePush",
    "ContentCallback.ResultNotify",
    "Custom.Unknown",
];

fuzz_target!(|data: &[u8]| {
    let Some((pick, body)) = data.split_first() else {
        return;
    };
    let command = COMMANDS[usize::from(*pick) % COMMANDS.len()];
    let _ = check_body(body, command, catalog::lookup(command));
});
