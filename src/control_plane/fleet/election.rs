//! Observer slots and the leader key, both held by the instance's lease: a slot or the
//! leadership frees itself when its holder's lease expires (killed, frozen, cut off).

use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp};

use super::keys::Keys;

/// Takes the first free observer slot (or finds the one this instance holds already).
/// `Some(n)` when this instance holds slot `n`.
pub async fn take_slot(
    client: &mut Client,
    keys: &Keys,
    observers: u32,
    instance: &str,
    lease: i64,
) -> Result<Option<u32>, etcd_client::Error> {
    for n in 0..observers {
        let key = keys.observer_slot(n);
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.as_str(),
                instance,
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let resp = client.txn(txn).await?;
        if resp.succeeded() || holds(&resp, instance, lease) {
            return Ok(Some(n));
        }
    }
    Ok(None)
}

/// Becomes leader if no one is. `Some(term)` — the leader key's create_revision, which every
/// publication is conditional on — when this instance leads.
pub async fn campaign(
    client: &mut Client,
    keys: &Keys,
    instance: &str,
    lease: i64,
) -> Result<Option<i64>, etcd_client::Error> {
    let key = keys.leader();
    let txn = Txn::new()
        .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            key.as_str(),
            instance,
            Some(PutOptions::new().with_lease(lease)),
        )])
        .or_else([TxnOp::get(key.as_str(), None)]);
    let resp = client.txn(txn).await?;
    if resp.succeeded() {
        return Ok(resp.header().map(|h| h.revision()));
    }
    // Already ours (a retry after a lost reply): the existing key's revision is the term.
    Ok(held_kv(&resp, instance, lease))
}

/// The create_revision of the key the txn read back, when this instance holds it already.
fn held_kv(resp: &etcd_client::TxnResponse, instance: &str, lease: i64) -> Option<i64> {
    resp.op_responses().into_iter().find_map(|op| match op {
        etcd_client::TxnOpResponse::Get(g) => {
            let kv = g.kvs().first()?;
            (kv.value() == instance.as_bytes() && kv.lease() == lease)
                .then_some(kv.create_revision())
        }
        _ => None,
    })
}

fn holds(resp: &etcd_client::TxnResponse, instance: &str, lease: i64) -> bool {
    held_kv(resp, instance, lease).is_some()
}
