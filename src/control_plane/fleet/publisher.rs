//! The leader's write: one decision record, in a transaction conditional on the leader key
//! still being the one this instance created (fencing). A leader frozen past its lease finds
//! the key gone or re-created by its successor, and its write is refused by etcd itself.

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};

use super::keys::Keys;
use super::record::DecisionRecord;

/// What became of a publication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// Written at this revision.
    Written(i64),
    /// The leader key is no longer this term's: leadership is lost.
    Fenced,
}

pub async fn publish(
    client: &mut Client,
    keys: &Keys,
    term: i64,
    record: &DecisionRecord,
) -> Result<Published, etcd_client::Error> {
    let json = serde_json::to_vec(record).expect("a decision record always serialises");
    let txn = Txn::new()
        .when([Compare::create_revision(
            keys.leader(),
            CompareOp::Equal,
            term,
        )])
        .and_then([TxnOp::put(keys.decision(&record.cluster), json, None)]);
    let resp = client.txn(txn).await?;
    Ok(match (resp.succeeded(), resp.header()) {
        (true, Some(h)) => Published::Written(h.revision()),
        (true, None) => Published::Written(0),
        (false, _) => Published::Fenced,
    })
}
