//! `audit show` and `audit verify`: the daemon's hash-chained audit log of
//! a slot, read record by record exactly as stored (the format is described
//! in the daemon's `audit` module). Verification happens here, in the
//! reader, so that a daemon that lies about its log can be caught by
//! re-hashing what it returns.

use mesign_proto::{ReplyBody, RequestBody};
use serde_json::{json, Value};

use crate::args::{hex, Args};
use crate::client::Connection;
use crate::error::CliError;

/// Records asked for per request; the daemon may return fewer.
const PAGE: u32 = 1000;

/// Reads the slot's records from number `from` to the end.
fn records(args: &Args, from: u64) -> Result<Vec<Vec<u8>>, CliError> {
    let mut conn = Connection::open(&args.socket()?)?;
    let slot = conn.slot(args.slot()?)?;
    let mut out = Vec::new();
    loop {
        let next = from + out.len() as u64;
        match conn.call(RequestBody::AuditRead {
            slot,
            from: next,
            max: PAGE,
        })? {
            ReplyBody::AuditRecords(page) if page.is_empty() => return Ok(out),
            ReplyBody::AuditRecords(page) => out.extend(page.into_iter().map(|r| r.0)),
            _ => return Err(CliError::UnexpectedReply),
        }
    }
}

/// `audit show [--from N]`: one line per record, or a JSON array of the
/// records as stored.
pub fn show(args: &Args) -> Result<(), CliError> {
    args.no_positional()?;
    let from = match args.value("from")? {
        None => 0,
        Some(n) => n
            .parse()
            .map_err(|_| CliError::Usage(format!("--from wants a record number, not {n}")))?,
    };
    let records = records(args, from)?;
    if args.json() {
        let parsed: Vec<Value> = records
            .iter()
            .map(|r| serde_json::from_slice(r).unwrap_or_else(|_| json!({"malformed": hex(r)})))
            .collect();
        println!("{}", Value::Array(parsed));
        return Ok(());
    }
    for raw in &records {
        match serde_json::from_slice::<Value>(raw) {
            Ok(v) => println!(
                "{:>6} {} {:<21} pid {} {}",
                v["seq"],
                v["time"],
                v["event"].as_str().unwrap_or("?"),
                v["pid"],
                v["detail"]
            ),
            Err(_) => println!("malformed record: {}", String::from_utf8_lossy(raw)),
        }
    }
    Ok(())
}

/// The first break in a chain: the record's number (its position) and why.
#[derive(Debug, PartialEq, Eq)]
struct Break {
    record: u64,
    why: String,
}

/// Checks `records` as a chain from record 0; returns the count and the
/// head hash (of the last record; 64 zeros for an empty log).
fn check_chain(records: &[Vec<u8>]) -> Result<(u64, String), Break> {
    let mut prev = "0".repeat(64);
    for (i, raw) in records.iter().enumerate() {
        let record = i as u64;
        let fail = |why: String| Break { record, why };
        let v: Value =
            serde_json::from_slice(raw).map_err(|e| fail(format!("not a JSON record ({e})")))?;
        match v["seq"].as_u64() {
            Some(seq) if seq == record => {}
            Some(seq) => {
                return Err(fail(format!(
                    "sequence number {seq} where {record} was expected (records removed, inserted or reordered)"
                )))
            }
            None => return Err(fail("no sequence number".into())),
        }
        if v["prev"].as_str() != Some(prev.as_str()) {
            return Err(fail(if record == 0 {
                "the first record does not start the chain".into()
            } else {
                format!(
                    "its prev hash is not the SHA-256 of record {} (record {} was changed, or records were removed or reordered)",
                    record - 1,
                    record - 1
                )
            }));
        }
        prev = hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, raw).as_ref());
    }
    Ok((records.len() as u64, prev))
}

/// `audit verify`: exit 0 with the count and head hash, or 1 naming the
/// first bad record. A log cut short at the end still verifies: compare the
/// head hash with one noted earlier to detect that.
pub fn verify(args: &Args) -> Result<(), CliError> {
    args.no_positional()?;
    let records = records(args, 0)?;
    match check_chain(&records) {
        Ok((count, head)) => {
            if args.json() {
                println!("{}", json!({"ok": true, "records": count, "head": head}));
            } else {
                println!("OK: {count} records, head {head}");
            }
            Ok(())
        }
        Err(Break { record, why }) => {
            if args.json() {
                println!("{}", json!({"ok": false, "record": record, "why": why}));
            }
            Err(CliError::Rejected(format!(
                "audit log broken at record {record}: {why}"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<Vec<u8>> {
        let mut prev = "0".repeat(64);
        (0..n)
            .map(|seq| {
                let raw = serde_json::to_vec(&json!({"seq": seq, "prev": prev})).unwrap();
                prev = hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &raw).as_ref());
                raw
            })
            .collect()
    }

    #[test]
    fn edits_removals_and_reorderings_break_the_chain() {
        let good = chain(4);
        assert_eq!(check_chain(&good).unwrap().0, 4);
        assert_eq!(check_chain(&[]).unwrap(), (0, "0".repeat(64)));
        let mut edited = good.clone();
        edited[1].push(b' ');
        assert_eq!(check_chain(&edited).unwrap_err().record, 2);
        let mut removed = good.clone();
        removed.remove(1);
        assert_eq!(check_chain(&removed).unwrap_err().record, 1);
        let mut swapped = good.clone();
        swapped.swap(1, 2);
        assert_eq!(check_chain(&swapped).unwrap_err().record, 1);
        let mut garbage = good;
        garbage[0] = b"{".to_vec();
        assert_eq!(check_chain(&garbage).unwrap_err().record, 0);
    }
}
