//! Control requests as the wire carries them: typed by `verb`, strict, and
//! compatible with the per-verb subjects' untagged payloads.

use super::*;
use crate::codec::{self, Encoding};

fn json(text: &str, subject: Option<&str>) -> Result<ControlRequest, String> {
    ControlRequest::decode(text.as_bytes(), Encoding::Json, subject).map_err(|e| e.to_string())
}

fn scale(target: &str, desired: u32, force: bool) -> ControlRequest {
    ControlRequest::Scale(ScaleRequest {
        target: target.into(),
        desired,
        reason: None,
        force,
    })
}

fn pause(direction: Option<Direction>) -> ControlRequest {
    ControlRequest::Pause(DirectionRequest {
        target: "web".into(),
        direction,
        reason: None,
    })
}

#[test]
fn requests_decode_by_verb_or_by_subject_and_refuse_the_rest_by_name() {
    // (payload, subject's verb, decoded or the error's text)
    let cases: Vec<(&str, Option<&str>, Result<ControlRequest, &str>)> = vec![
        (
            r#"{"verb":"status"}"#,
            None,
            Ok(ControlRequest::status(None)),
        ),
        (
            r#"{"verb":"scale","target":"web","desired":12,"force":true}"#,
            None,
            Ok(scale("web", 12, true)),
        ),
        (
            r#"{"verb":"emergency","op":"down","target":"all","by":2,"reason":"incident"}"#,
            None,
            Ok(ControlRequest::Emergency(EmergencyRequest {
                op: EmergencyOp::Down,
                target: "all".into(),
                by: Some(2),
                to: None,
                reason: Some("incident".into()),
            })),
        ),
        (
            r#"{"op":"reset","target":"web"}"#,
            Some("emergency"),
            Ok(ControlRequest::Emergency(EmergencyRequest {
                op: EmergencyOp::Reset,
                target: "web".into(),
                by: None,
                to: None,
                reason: None,
            })),
        ),
        (
            r#"{"verb":"emergency","op":"sideways","target":"web"}"#,
            None,
            Err("unknown variant `sideways`, expected one of `up`, `down`, `reset`"),
        ),
        (
            r#"{"verb":"scale","target":"web","desired":12}"#,
            None,
            Ok(scale("web", 12, false)),
        ),
        (
            r#"{"verb":"pause","target":"web","direction":"up"}"#,
            None,
            Ok(pause(Some(Direction::Up))),
        ),
        // What per-verb subjects carried before the verb was typed.
        ("", Some("status"), Ok(ControlRequest::status(None))),
        (
            r#"{"target":"web"}"#,
            Some("status"),
            Ok(ControlRequest::status(Some("web".into()))),
        ),
        (r#"{"target":"web"}"#, Some("pause"), Ok(pause(None))),
        (
            r#"{"target":"web","desired":3}"#,
            Some("scale"),
            Ok(scale("web", 3, false)),
        ),
        (
            r#"{"verb":"pause","target":"web"}"#,
            Some("pause"),
            Ok(pause(None)),
        ),
        // Refused, by name.
        (
            r#"{"verb":"frobnicate","target":"web"}"#,
            None,
            Err(r#"unknown verb "frobnicate""#),
        ),
        (
            r#"{"verb":"evacuate"}"#,
            Some("pause"),
            Err(r#"unknown verb "evacuate""#),
        ),
        (
            r#"{"verb":"resume","target":"web"}"#,
            Some("pause"),
            Err(r#"verb "resume" sent on nova.ctl.pause"#),
        ),
        (r#"{"target":"web"}"#, None, Err("no verb")),
        ("", None, Err("no verb")),
        (
            r#"{"verb":1,"target":"web"}"#,
            None,
            Err("verb must be a string, found 1"),
        ),
        (r#"{"verb":"pause"}"#, None, Err("missing field `target`")),
        (
            r#"{"verb":"scale","target":"web"}"#,
            None,
            Err("missing field `desired`"),
        ),
        (
            r#"{"verb":"pause","target":"web","desired":3}"#,
            None,
            Err("unknown field `desired`"),
        ),
        (
            r#"{"verb":"status","force":true}"#,
            None,
            Err("unknown field `force`"),
        ),
        (
            r#"{"target":"t","desird":7}"#,
            Some("pause"),
            Err("unknown field `desird`"),
        ),
        (
            r#"{"target":"t","direction":1}"#,
            Some("pause"),
            Err("invalid type: integer `1`, expected a string"),
        ),
        (
            r#"{"target":"t","direction":"sideways"}"#,
            Some("resume"),
            Err(r#"direction must be "up" or "down", found "sideways""#),
        ),
        (
            r#"{"verb":"scale","target":"web","desired":-1}"#,
            None,
            Err("invalid value: integer `-1`, expected u32"),
        ),
        (
            r#"["web"]"#,
            Some("pause"),
            Err("expected a map of named fields"),
        ),
    ];
    for (payload, subject, want) in cases {
        let got = json(payload, subject);
        match (&got, &want) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{payload}"),
            (Err(got), Err(want)) => {
                assert!(got.contains(want), "{payload}: {got:?} lacks {want:?}")
            }
            _ => panic!("{payload} on {subject:?}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn requests_round_trip_with_their_verb_in_both_encodings() {
    let requests = [
        ControlRequest::status(None),
        ControlRequest::status(Some("web".into())),
        pause(Some(Direction::Down)),
        ControlRequest::Resume(DirectionRequest {
            target: "web".into(),
            direction: None,
            reason: Some("done".into()),
        }),
        scale("web", 7, false),
        scale("web", 0, true),
    ];
    for request in requests {
        let json_text = serde_json::to_string(&request).unwrap();
        assert!(
            json_text.starts_with(&format!("{{\"verb\":\"{}\"", request.verb())),
            "{json_text}"
        );
        let bytes = codec::encode(&request).unwrap();
        for (payload, encoding) in [
            (bytes.as_slice(), Encoding::MsgPack),
            (json_text.as_bytes(), Encoding::Json),
        ] {
            for subject in [None, Some(request.verb())] {
                let back = ControlRequest::decode(payload, encoding, subject).unwrap();
                assert_eq!(back, request, "{json_text} on {subject:?}");
            }
        }
    }
    assert_eq!(
        serde_json::to_string(&scale("web", 3, false)).unwrap(),
        r#"{"verb":"scale","target":"web","desired":3}"#,
        "force only when set"
    );
}

#[test]
fn a_failed_reply_also_reads_as_an_error_reply() {
    let bytes = codec::encode(&ControlReply::failed("unknown verb \"x\"".into())).unwrap();
    let reply: ControlReply = codec::decode(&bytes, Encoding::MsgPack).unwrap();
    assert!(!reply.ok);
    let error: ErrorReply = codec::decode(&bytes, Encoding::MsgPack).unwrap();
    assert_eq!(error.error, reply.message);
    let done = codec::encode(&ControlReply::done("ok".into(), vec![])).unwrap();
    assert!(codec::decode::<ErrorReply>(&done, Encoding::MsgPack).is_err());
}
