//! LSN strings, WAL file names and status rows of primaries and replicas, sane and not.

use super::*;

fn primary() -> StatusRow<'static> {
    StatusRow {
        in_recovery: Some("f"),
        current_lsn: Some("0/9000878"),
        current_walfile: Some("000000050000000000000009"),
        backend_pid: Some("26044"),
        ..StatusRow::default()
    }
}

fn replica() -> StatusRow<'static> {
    StatusRow {
        in_recovery: Some("t"),
        receive_lsn: Some("0/9000878"),
        replay_lsn: Some("0/9000878"),
        replay_age: Some("317.263554"),
        receiver_pid: Some("22387"),
        receiver_status: Some("streaming"),
        received_tli: Some("5"),
        backend_pid: Some("26063"),
        ..StatusRow::default()
    }
}

#[test]
fn lsn_strings() {
    assert_eq!(parse_lsn("0/0"), Some(0));
    assert_eq!(parse_lsn("0/9000878"), Some(0x0900_0878));
    assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
    assert_eq!(parse_lsn("FFFFFFFF/FFFFFFFF"), Some(u64::MAX));
    for bad in [
        "", "/", "0/", "/0", "0", "1/2/3", "+1/0", "0/-1", "0x1/0", "1 /0", "G/0",
    ] {
        assert_eq!(parse_lsn(bad), None, "{bad:?}");
    }
    assert_eq!(parse_lsn("100000000/0"), None);
}

#[test]
fn walfile_timelines() {
    assert_eq!(timeline_of_walfile("000000050000000000000009"), Some(5));
    assert_eq!(timeline_of_walfile("0000000A00000001000000FF"), Some(10));
    assert_eq!(timeline_of_walfile("000000000000000000000009"), None);
    assert_eq!(timeline_of_walfile("00000005000000000000009"), None);
    assert_eq!(timeline_of_walfile("+0000005000000000000000009"), None);
    assert_eq!(timeline_of_walfile("éééééééééééé"), None);
}

#[test]
fn primary_reports_write_position_and_walfile_timeline() {
    let status = interpret(&primary()).unwrap();
    assert_eq!(status.backend_pid, Some(26044));
    assert_eq!(
        status.facts,
        Facts {
            role: ObservedRole::Primary,
            replica: None,
            write_position: Some(0x0900_0878),
            timeline: Some(5),
        }
    );
}

#[test]
fn caught_up_streaming_replica_has_zero_lag_however_old_the_last_transaction() {
    let facts = interpret(&replica()).unwrap().facts;
    assert_eq!(facts.role, ObservedRole::Replica);
    assert_eq!(facts.timeline, Some(5));
    assert_eq!(facts.write_position, None);
    assert_eq!(
        facts.replica,
        Some(ReplicaFacts {
            lag: Some(Duration::ZERO),
            position: Some(0x0900_0878),
            link_up: true,
        })
    );
}

#[test]
fn replaying_replica_reports_replay_age_and_disconnected_one_reports_nothing() {
    let behind = StatusRow {
        replay_lsn: Some("0/9000000"),
        replay_age: Some("2.5"),
        ..replica()
    };
    let facts = interpret(&behind).unwrap().facts.replica.unwrap();
    assert_eq!(facts.lag, Some(Duration::from_millis(2500)));
    assert_eq!(facts.position, Some(0x0900_0000));

    let never_replayed = StatusRow {
        replay_age: None,
        ..behind
    };
    assert_eq!(
        interpret(&never_replayed)
            .unwrap()
            .facts
            .replica
            .unwrap()
            .lag,
        None
    );

    let disconnected = StatusRow {
        receiver_pid: None,
        receiver_status: None,
        received_tli: None,
        ..replica()
    };
    let facts = interpret(&disconnected).unwrap().facts;
    assert_eq!(facts.timeline, None);
    let cut_off = facts.replica.unwrap();
    assert!(!cut_off.link_up);
    assert_eq!(
        cut_off.lag, None,
        "a replica cut off from its primary cannot know its lag"
    );

    let restarting = StatusRow {
        receiver_status: Some("waiting"),
        ..replica()
    };
    assert!(
        !interpret(&restarting)
            .unwrap()
            .facts
            .replica
            .unwrap()
            .link_up
    );
}

#[test]
fn hidden_receiver_status_names_the_missing_privilege() {
    let hidden = StatusRow {
        receiver_status: None,
        received_tli: None,
        ..replica()
    };
    let failure = interpret(&hidden).unwrap_err();
    assert_eq!(failure.reason, FailureReason::QueryFailed);
    assert!(failure.detail.contains("pg_monitor"), "{failure}");
}

#[test]
fn malformed_rows_are_unexpected_replies_not_panics() {
    let cases = [
        StatusRow::default(),
        StatusRow {
            in_recovery: Some("maybe"),
            ..primary()
        },
        StatusRow {
            current_lsn: None,
            ..primary()
        },
        StatusRow {
            current_lsn: Some("0/zz"),
            ..primary()
        },
        StatusRow {
            current_walfile: Some("nope"),
            ..primary()
        },
        StatusRow {
            backend_pid: Some("-1"),
            ..primary()
        },
        StatusRow {
            replay_lsn: Some("1/"),
            ..replica()
        },
        StatusRow {
            received_tli: Some("0"),
            ..replica()
        },
        StatusRow {
            replay_age: Some("NaN"),
            ..replica()
        },
    ];
    for row in cases {
        let failure = interpret(&row).unwrap_err();
        assert_eq!(failure.reason, FailureReason::UnexpectedReply, "{row:?}");
    }
}

#[test]
fn row_is_read_in_query_order() {
    let values = ["t", "a", "b", "c", "d", "e", "f", "g", "h", "i"];
    let row = StatusRow::from_columns(|i| values.get(i).copied());
    assert_eq!(row.in_recovery, Some("t"));
    assert_eq!(row.backend_pid, Some("i"));
    // One column per field, in order: the SELECT list has as many items.
    let select = STATUS_QUERY.split(" FROM s ").next().unwrap_or_default();
    let select = select
        .split("SELECT s.in_recovery")
        .nth(1)
        .unwrap_or_default();
    assert_eq!(select.matches(", ").count() + 1, values.len());
}
