//! An app's custom domains (SPEC §11): claim with a TXT token, list, verify through the
//! resolver, status, delete; and `GET /api/v1/domains/allowed?domain=` for a front proxy's
//! on-demand TLS check, answered from the host map.

use http::{Response, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use super::apps::managed_app;
use super::input::Fields;
use super::time;
use crate::auth::Principal;
use crate::domains::name::{check_domain, host_key};
use crate::state::AppState;
use crate::store::domains::{
    AppDomain, ClaimError, add_claim, claim_of, mark_verified, of_app, record_name, remove,
    verified,
};
use crate::web::body::{Body, json_body};
use crate::web::error::ApiError;

fn record_view(d: &AppDomain) -> Value {
    json!({"type": "TXT", "name": record_name(&d.name), "value": d.token})
}

fn domain_view(d: &AppDomain) -> Value {
    json!({
        "domain": d.name,
        "verified": d.verified_at.is_some(),
        "verificationRecord": record_view(d),
        "createdAt": time(d.created_at),
        "verifiedAt": d.verified_at.map(time),
    })
}

/// The body's `domain`, checked (400 naming `domain`).
fn domain_of(state: &AppState, body: &[u8]) -> Result<String, ApiError> {
    let mut f = Fields::parse(body)?;
    let text = f.string("domain", 300, true);
    f.finish()?;
    let text = text.ok_or(ApiError::Internal)?;
    check_domain(&text, state.hosts.apps_domain()).map_err(|why| ApiError::Validation {
        message: format!("domain: {why}"),
        details: json!({ "domain": why }),
    })
}

/// `POST /api/v1/apps/{id}/domains {domain}`: 201 with the TXT record to create.
pub async fn add(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let domain = domain_of(state, body)?;
    let requester = principal.clone();
    let now = state.now().millis();
    let name = domain.clone();
    let claimed = state
        .store
        .write_blocking(move |txn| {
            let app = managed_app(txn, id, &requester)?;
            add_claim(txn, app.id, app.organization_id, &name, now).map_err(|e| match e {
                ClaimError::TakenElsewhere => ApiError::Conflict {
                    message: format!("{name} is verified by another organization"),
                    details: Some(json!({ "domain": "taken" })),
                },
                ClaimError::OtherApp => ApiError::Conflict {
                    message: format!(
                        "{name} is verified for another of your apps; delete it there first"
                    ),
                    details: Some(json!({ "domain": "used by another app" })),
                },
                ClaimError::Store(e) => e.into(),
            })
        })
        .await?;
    let record = record_view(&claimed);
    let instructions = vec![
        format!(
            "Create a TXT record named {} with the value {}",
            record_name(&domain),
            claimed.token
        ),
        format!(
            "Point {domain} at this server (an A/AAAA record, or a CNAME to the server's name)"
        ),
        format!("Then POST /api/v1/apps/{id}/domains/verify {{\"domain\": \"{domain}\"}}"),
    ];
    let status = if claimed.verified_at.is_some() || claimed.created_at != now {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(json_body(
        status,
        &json!({
            "success": true,
            "domain": domain,
            "verified": claimed.verified_at.is_some(),
            "verificationRecord": record,
            "dnsInstructions": instructions,
        }),
    ))
}

/// `GET /api/v1/apps/{id}/domains`.
pub async fn list(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
) -> Result<Response<Body>, ApiError> {
    let requester = principal.clone();
    let domains = state
        .store
        .read_blocking(move |txn| {
            managed_app(txn, id, &requester)?;
            Ok::<_, ApiError>(of_app(txn, id)?)
        })
        .await?;
    Ok(json_body(
        StatusCode::OK,
        &json!({ "domains": domains.iter().map(domain_view).collect::<Vec<_>>() }),
    ))
}

/// `DELETE /api/v1/apps/{id}/domains {domain}`: the name is released (neither allowed nor served
/// from the next request on).
pub async fn delete(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let domain = domain_of(state, body)?;
    let requester = principal.clone();
    let hosts = state.hosts.clone();
    let certs = state.certs.clone();
    state
        .store
        .write_blocking_hooked(move |txn, on_commit| {
            managed_app(txn, id, &requester)?;
            match remove(txn, id, &domain)? {
                None => Err(ApiError::NotFound),
                Some(was_verified) => {
                    if was_verified {
                        crate::domains::certs::release(txn, &domain)?;
                        on_commit.push(move || {
                            hosts.remove(&domain);
                            certs.remove(&domain);
                        });
                    }
                    Ok(())
                }
            }
        })
        .await?;
    Ok(json_body(StatusCode::OK, &json!({ "success": true })))
}

/// `POST /api/v1/apps/{id}/domains/verify {domain}`: looks the TXT record up; 200 either way.
pub async fn verify(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let domain = domain_of(state, body)?;
    let requester = principal.clone();
    let name = domain.clone();
    let (claim, done) = state
        .store
        .read_blocking(move |txn| {
            managed_app(txn, id, &requester)?;
            let done = verified(txn, &name)?.filter(|d| d.app_id == id);
            Ok::<_, ApiError>((claim_of(txn, &name, id)?, done))
        })
        .await?;
    if done.is_some() {
        return Ok(json_body(
            StatusCode::OK,
            &json!({ "domain": domain, "verified": true }),
        ));
    }
    let claim = claim.ok_or(ApiError::NotFound)?;
    let resolver = state.resolver.as_ref().ok_or_else(|| {
        ApiError::ServiceUnavailable("no DNS resolver on this server (see its log)".into())
    })?;
    let record = record_name(&domain);
    let found = match resolver.txt(&record).await {
        Ok(found) => found,
        Err(why) => {
            return Ok(json_body(
                StatusCode::OK,
                &json!({ "domain": domain, "verified": false, "error": why }),
            ));
        }
    };
    if !found.iter().any(|t| t.trim() == claim.token) {
        let error = if found.is_empty() {
            format!("no TXT record at {record}")
        } else {
            let shown: Vec<String> = found
                .iter()
                .take(5)
                .map(|t| t.chars().take(80).collect())
                .collect();
            format!(
                "the TXT records at {record} are {shown:?}; none is {}",
                claim.token
            )
        };
        return Ok(json_body(
            StatusCode::OK,
            &json!({ "domain": domain, "verified": false, "error": error }),
        ));
    }
    let requester = principal.clone();
    let hosts = state.hosts.clone();
    let certs = state.certs.clone();
    let acme = state.acme.clone();
    let now = state.now().millis();
    let name = domain.clone();
    state
        .store
        .write_blocking_hooked(move |txn, on_commit| {
            managed_app(txn, id, &requester)?;
            // Someone else may have verified it in between: the first one wins.
            if let Some(other) = verified(txn, &name)? {
                return if other.app_id == id {
                    Ok(())
                } else {
                    Err(ApiError::Conflict {
                        message: format!("{name} was verified by another app first"),
                        details: Some(json!({ "domain": "taken" })),
                    })
                };
            }
            if claim_of(txn, &name, id)?.is_none() {
                return Err(ApiError::NotFound);
            }
            mark_verified(txn, id, &name, now)?;
            match acme.filter(|_| crate::domains::acme::orderable(&name)) {
                // Queued for the ACME CA in the same transaction; the orderer is woken after
                // the commit, and serves the certificate once it arrives.
                Some(acme) => {
                    crate::domains::acme::want(txn, &name, now)?;
                    on_commit.push(move || {
                        hosts.insert(name, id);
                        acme.wake();
                    });
                }
                // Its certificate, from the local CA, in the same transaction: served at once
                // (also with ACME on, for a name no public CA can issue, as `prepare` does).
                None => {
                    let cert = crate::domains::certs::ensure_local(txn, &name, &[], now)?;
                    on_commit.push(move || {
                        certs.insert(name.clone(), &cert);
                        hosts.insert(name, id);
                    });
                }
            }
            Ok(())
        })
        .await?;
    tracing::info!(app = %id, domain = %domain, "custom domain verified");
    Ok(json_body(
        StatusCode::OK,
        &json!({ "domain": domain, "verified": true }),
    ))
}

/// `POST /api/v1/apps/{id}/domains/status {domain}`.
pub async fn status(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let domain = domain_of(state, body)?;
    let requester = principal.clone();
    let name = domain.clone();
    let found = state
        .store
        .read_blocking(move |txn| {
            managed_app(txn, id, &requester)?;
            let found = of_app(txn, id)?.into_iter().find(|d| d.name == name);
            let cert = crate::domains::certs::get_cert(txn, &name)?;
            let order = crate::domains::acme::pending_of(txn, &name)?;
            Ok::<_, ApiError>((found, cert, order))
        })
        .await?;
    let (found, cert, order) = found;
    let d = found.ok_or(ApiError::NotFound)?;
    let verified = d.verified_at.is_some();
    let cert = cert.filter(|_| verified);
    // The last failed order's reason, while the name waits for its (next) certificate.
    let error = order
        .filter(|_| verified)
        .and_then(|o| o.last_error.map(|e| (e, o.next_attempt)));
    let ssl = match (&cert, &error) {
        (Some(_), _) => "active",
        (None, Some(_)) => "error",
        (None, None) => "pending",
    };
    Ok(json_body(
        StatusCode::OK,
        &json!({
            "domain": d.name,
            "verified": verified,
            "sslStatus": ssl,
            "sslExpiresAt": cert.as_ref().map(|c| time(c.not_after)),
            "issuer": cert.as_ref().map_or(Value::Null, |c| Value::String(c.issuer_kind().to_string())),
            "sslError": error.as_ref().map(|(e, _)| e.clone()),
            "sslRetryAt": error.as_ref().map(|(_, at)| time(*at)),
        }),
    ))
}

/// `GET /api/v1/ca.pem`: the local CA's certificate, for clients to trust (no credential).
pub async fn ca_pem(state: &AppState) -> Result<Response<Body>, ApiError> {
    let pem = state
        .store
        .read_blocking(crate::domains::certs::ca_pem)
        .await?
        .ok_or(ApiError::NotFound)?;
    let mut response = Response::new(crate::web::body::full(pem));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-pem-file"),
    );
    Ok(response)
}

/// `GET /.well-known/acme-challenge/{token}` on any host: the key authorization of an order
/// waiting for its HTTP-01 validation (RFC 8555 §8.3), from memory; 404 otherwise.
pub fn acme_challenge(state: &AppState, path: &str) -> Result<Response<Body>, ApiError> {
    let token = path
        .strip_prefix(crate::web::route::ACME_CHALLENGE_PREFIX)
        .unwrap_or_default();
    let answer = state
        .acme
        .as_ref()
        .and_then(|acme| acme.answer(token))
        .ok_or(ApiError::NotFound)?;
    let mut response = Response::new(crate::web::body::full(answer));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/octet-stream"),
    );
    Ok(response)
}

/// `GET /api/v1/domains/allowed?domain=`: 200 for a host this server serves (an app's subdomain
/// or verified domain, or the public URL's host), 404 otherwise; from memory, no credential, no
/// rate-limit token (a proxy may ask on every handshake).
pub fn allowed(state: &AppState, query: Option<&str>) -> Result<Response<Body>, ApiError> {
    let asked = crate::web::query::parse_query(query.unwrap_or(""))
        .ok()
        .and_then(|pairs| {
            pairs
                .into_iter()
                .find(|(k, _)| k == "domain")
                .map(|(_, v)| v)
        });
    let host = asked.as_deref().and_then(host_key);
    let public = host_key(&state.config.public_url.host);
    let served = host
        .as_deref()
        .is_some_and(|h| state.hosts.app_of(h).is_some() || public.as_deref() == Some(h));
    if served {
        Ok(json_body(StatusCode::OK, &json!({ "allowed": true })))
    } else {
        Err(ApiError::NotFound)
    }
}
