//! The example `[alert]` table stays valid, and config mistakes are reported in the operator's words.

use streetwatch::alert::AlertConfig;

#[test]
fn the_example_config_is_valid() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/alert/alert.example.toml");
    let doc: toml::Value = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let table = toml::to_string(&doc["alert"]).unwrap();
    let cfg = AlertConfig::from_toml(&table).unwrap();
    assert_eq!(cfg.receivers.len(), 4);
    assert_eq!(cfg.route.routes.len(), 4);
    assert_eq!(cfg.flood.max_notices, 10);
}

#[test]
fn mistakes_are_named() {
    let cases = [
        (
            "[route]\nreceiver = \"ghost\"\n",
            "unknown receiver \"ghost\"",
        ),
        ("[route]\ngroup_wait = \"10 seconds\"\n", "bad duration"),
        ("[[route.routes]]\nhours = [\"25:00-01:00\"]\n", "bad hours"),
        (
            "[route]\n[route.match]\nward = [\"X\"]\n",
            "root route matches everything",
        ),
        (
            "[[receivers]]\nname = \"a\"\n",
            "no sms, email, webhook or log",
        ),
        (
            "[[receivers]]\nname = \"a\"\nwebhook = { url = \"http://x/\", secret = \"short\" }\n",
            "at least 16 bytes",
        ),
        (
            "[[receivers]]\nname = \"a\"\n[receivers.sms]\nurl = \"http://x/\"\nusername = \"u\"\npassword = \"p\"\nnumbers = [\"0901234567\"]\ntemplate = \"{oops}\"\n",
            "unknown placeholder {oops}",
        ),
        (
            "[[receivers]]\nname = \"a\"\n[receivers.email]\nsmtp_host = \"h\"\nfrom = \"not an address\"\nto = [\"x@y.vn\"]\n",
            "bad address",
        ),
        (
            "[retry]\ninitial_backoff = \"10s\"\nmax_backoff = \"1s\"\n",
            "initial_backoff ≤ max_backoff",
        ),
        (
            "[[inhibit.rules]]\nsource = {}\ntarget = {}\nequal = [\"colour\"]\n",
            "cannot compare label \"colour\"",
        ),
    ];
    for (text, want) in cases {
        let err = AlertConfig::from_toml(text).unwrap_err().to_string();
        assert!(err.contains(want), "{text:?}: got {err:?}, want {want:?}");
    }
}
