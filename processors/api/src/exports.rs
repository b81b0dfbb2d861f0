//! `GET /v1/exports?format=csv|jsonl&since=&until=&form=`: a tenant's submissions, streamed page
//! by page (never held whole), newest first, through the same merge as the listing.
//!
//! - **JSONL:** one object per line, `{"submission_id", "received_at", "form_id", "site",
//!   "payload"}`, the payload as it was sent.
//! - **CSV:** the columns `submission_id, received_at, form_id, site`, then the union of the
//!   field names (`payload.fields`) of every exported submission, sorted. Knowing the union before
//!   the first row means reading the range twice: once for the names (nothing is kept but the
//!   set of names), once to write the rows. A field a submission lacks is an empty cell; an array
//!   is its items joined with `"; "` (an item that is not a string is written as JSON); an object
//!   is written as JSON. A cell that would start with `=`, `+`, `-`, `@`, tab or carriage return
//!   gets a leading `'`, so a spreadsheet never runs it as a formula.
//!
//! A failure mid-way ends the response without its final chunk, so a client sees a truncated
//! transfer, never a short file that looks complete.

use std::collections::BTreeSet;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};

use formbridge_shared::listing::{ListFilter, SubmissionSummary, MAX_PAGE};
use formbridge_shared::tenant::TenantProfile;
use formbridge_shared::FormId;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::submissions::parse_time;
use crate::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    pub format: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub form: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Csv,
    Jsonl,
}

const FIXED: [&str; 4] = ["submission_id", "received_at", "form_id", "site"];

fn fields(s: &SubmissionSummary) -> Option<&serde_json::Map<String, Value>> {
    s.payload.as_ref()?.get("fields")?.as_object()
}

/// One cell of a CSV row (see the module documentation).
pub fn cell(v: Option<&Value>) -> String {
    let text = match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join("; "),
        Some(other) => other.to_string(),
    };
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text
    }
}

fn csv_line(cells: &[String]) -> Bytes {
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(Vec::new());
    w.write_record(cells).expect("writing to memory");
    Bytes::from(w.into_inner().expect("writing to memory"))
}

/// Every page of the range, in order, handed to `each` (the CSV pass that collects names).
async fn pages(
    state: &AppState,
    profile: &TenantProfile,
    filter: &ListFilter,
    mut each: impl FnMut(Vec<SubmissionSummary>) -> bool,
) -> Result<(), ApiError> {
    let mut position: Option<String> = None;
    let reader = state.reader(&profile.tenant_id).await;
    loop {
        let page = reader.list_submissions_with(profile, filter, position.as_deref(), MAX_PAGE, true).await?;
        if !each(page.items) {
            return Ok(());
        }
        match page.next {
            Some(p) => position = Some(p),
            None => return Ok(()),
        }
    }
}

/// `GET /v1/exports`
pub async fn export(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<ExportParams>,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant()?.clone();
    let format = match p.format.as_deref().unwrap_or("jsonl") {
        "csv" => Format::Csv,
        "jsonl" => Format::Jsonl,
        _ => return Err(ApiError::bad_request("invalid_parameter", "format must be csv or jsonl")),
    };
    let form = p
        .form
        .as_deref()
        .map(|f| FormId::parse(f).map_err(|e| ApiError::bad_request("invalid_parameter", format!("form: {e}"))))
        .transpose()?;
    let ms = |t: time::OffsetDateTime| u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    let since_ms = p.since.as_deref().map(|v| parse_time("since", v)).transpose()?.map(ms);
    let until_ms = p.until.as_deref().map(|v| parse_time("until", v)).transpose()?.map(ms);
    let filter = ListFilter { form, since_ms, until_ms, status: None };
    let profile = state.profile(&tenant).await?;
    // The CSV header needs every field name first: a pass that keeps only the names.
    let mut names = BTreeSet::new();
    if format == Format::Csv {
        pages(&state, &profile, &filter, |items| {
            for s in &items {
                names.extend(fields(s).into_iter().flat_map(|f| f.keys().cloned()));
            }
            true
        })
        .await?;
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        let columns: Vec<String> = names.into_iter().collect();
        if format == Format::Csv {
            let header: Vec<String> = FIXED.iter().map(|s| (*s).to_owned()).chain(columns.iter().cloned()).collect();
            if tx.send(Ok(csv_line(&header))).await.is_err() {
                return;
            }
        }
        let mut rows = 0u64;
        let mut position: Option<String> = None;
        loop {
            let page = match state
                .inner
                .store
                .list_submissions_with(&profile, &filter, position.as_deref(), MAX_PAGE, true)
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    let e = ApiError::from(e);
                    tracing::warn!(code = e.code, "export stopped mid-way");
                    let _ = tx.send(Err(std::io::Error::other(e.message))).await;
                    return;
                }
            };
            let mut chunk = Vec::new();
            for s in &page.items {
                rows += 1;
                match format {
                    Format::Jsonl => {
                        let line = json!({
                            "submission_id": s.submission_id,
                            "received_at": s.received_at,
                            "form_id": s.form_id,
                            "site": s.site,
                            "payload": s.payload,
                        });
                        chunk.extend_from_slice(line.to_string().as_bytes());
                        chunk.push(b'\n');
                    }
                    Format::Csv => {
                        let f = fields(s);
                        let mut cells = vec![
                            s.submission_id.to_string(),
                            cell(Some(&json!(s.received_at))),
                            cell(Some(&json!(s.form_id))),
                            cell(Some(&json!(s.site))),
                        ];
                        cells.extend(columns.iter().map(|c| cell(f.and_then(|f| f.get(c)))));
                        chunk.extend_from_slice(&csv_line(&cells));
                    }
                }
            }
            // Waits while the client is slower than the reads: at most a few pages in memory.
            if tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                return; // the client went away
            }
            match page.next {
                Some(p) => position = Some(p),
                None => break,
            }
        }
        metrics::counter!("api_export_rows_total").increment(rows);
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let (kind, ext) = match format {
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
        Format::Jsonl => ("application/jsonl; charset=utf-8", "jsonl"),
    };
    Response::builder()
        .header(header::CONTENT_TYPE, kind)
        .header(header::CONTENT_DISPOSITION, format!("attachment; filename=\"{tenant}-submissions.{ext}\""))
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from_stream(stream))
        .map_err(ApiError::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_join_arrays_and_never_start_a_formula() {
        assert_eq!(cell(Some(&json!(["red", "blue", 3]))), "red; blue; 3");
        assert_eq!(cell(Some(&json!("=HYPERLINK(\"x\")"))), "'=HYPERLINK(\"x\")");
        assert_eq!(cell(Some(&json!("-5"))), "'-5");
        assert_eq!(cell(Some(&json!({"a": 1}))), "{\"a\":1}");
        assert_eq!(cell(None), "");
        assert_eq!(cell(Some(&json!(42))), "42");
        let line = csv_line(&["a,b".into(), "say \"hi\"".into(), "two\nlines".into()]);
        assert_eq!(&line[..], b"\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\"\r\n");
    }
}
