//! Answers rotagate writes itself, from `request_filter`.

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

use crate::logout::Answer;

/// Writes a complete small response from `request_filter`. The explicit
/// `Content-Length` keeps the connection reusable (pingora's `respond_error*` forces
/// `Connection: close`, wrong for redirects and ordinary refusals).
pub(crate) async fn respond(
    session: &mut Session,
    status: u16,
    headers: &[(&str, String)],
    body: Bytes,
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(headers.len() + 2))?;
    for (name, value) in headers {
        resp.append_header(name.to_string(), value.as_str())?;
    }
    resp.insert_header(CONTENT_LENGTH, body.len().to_string())?;
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(resp), head_only || body.is_empty())
        .await?;
    if !head_only && !body.is_empty() {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// Writes an [`Answer`] from `request_filter`.
pub(super) async fn respond_answer(session: &mut Session, a: Answer) -> Result<()> {
    let mut headers: Vec<(&str, String)> = a.headers.clone();
    for c in &a.set_cookies {
        headers.push(("set-cookie", c.clone()));
    }
    respond(session, a.status, &headers, a.body).await
}

pub(super) async fn respond_text(session: &mut Session, status: u16, text: &str) -> Result<()> {
    respond(
        session,
        status,
        &[
            ("content-type", "text/plain; charset=utf-8".to_string()),
            ("cache-control", "no-store".to_string()),
        ],
        Bytes::from(format!("{text}\n")),
    )
    .await
}
