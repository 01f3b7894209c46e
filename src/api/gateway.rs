//! The metered routes (SPEC §9): `models`, `chat/completions` (whole or streamed),
//! `embeddings` and `images/generations`. Each parses its body, finds the model, finds who pays
//! (the credential's organization, or an x402 payment for this one call), reserves the call's
//! largest cost, runs the provider through a [`Meter`], and answers in OpenAI's wire format with
//! `X-Eliza-Cost-Micros` and `X-Eliza-Overhead-Ms`.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::topup::{Collected, Refusal, collect, payment_required, receipt_headers};
use crate::auth::permissions::{Grant, Level, Resource};
use crate::gateway::billing::ReserveError;
use crate::gateway::models::{Kind, Model, Provider, image_cost, token_cost};
use crate::gateway::providers::dev;
use crate::gateway::providers::openai_compatible::{UpstreamError, api_error, read_body};
use crate::gateway::request::{Encoding, parse_chat, parse_embeddings, parse_images};
use crate::gateway::stream::{self, Chunk, Usage};
use crate::gateway::{CallContext, End, Meter, MeterSinks, Through, model_of, tokens};
use crate::money::format_dollars;
use crate::state::AppState;
use crate::store::keys::KeyType;
use crate::store::settlements::CreditTo;
use crate::web::Call;
use crate::web::body::{Body, json_body};
use crate::web::error::ApiError;
use crate::x402::payment_header;
use crate::x402::required::Offer;

/// Largest whole (non-streamed) upstream answer read, in bytes: chat and embeddings.
const MAX_UPSTREAM_ANSWER: usize = 64 << 20;
/// Largest upstream images answer (ten 1024² images as base64 PNG fit well inside).
const MAX_UPSTREAM_IMAGES: usize = 160 << 20;
/// `created` of every model in `/models`: the table has no dates of its own.
const MODELS_CREATED: i64 = 1_767_225_600;

static COST: http::HeaderName = http::HeaderName::from_static("x-eliza-cost-micros");
static OVERHEAD: http::HeaderName = http::HeaderName::from_static("x-eliza-overhead-ms");
static BALANCE: http::HeaderName = http::HeaderName::from_static("x-eliza-balance-micros");

fn model_view(model: &Model) -> Value {
    json!({
        "id": model.id,
        "object": "model",
        "created": MODELS_CREATED,
        "owned_by": match model.provider {
            Provider::Dev => "eliza-cloud-dev",
            Provider::OpenAiCompatible => "upstream",
        },
    })
}

/// `GET /api/v1/models`.
pub fn list_models(state: &AppState) -> Response<Body> {
    let data: Vec<Value> = state.gateway.config.models.iter().map(model_view).collect();
    json_body(StatusCode::OK, &json!({ "object": "list", "data": data }))
}

/// `GET /api/v1/models/{id}`: the id is the rest of the path (ids may hold a `/`).
pub fn get_model(state: &AppState, path: &str) -> Result<Response<Body>, ApiError> {
    let id = path
        .strip_prefix("/api/v1/models/")
        .unwrap_or_default()
        .trim_end_matches('/')
        .replace("%2F", "/")
        .replace("%2f", "/");
    let model = state
        .gateway
        .config
        .models
        .get(&id)
        .ok_or(ApiError::ModelNotFound {
            model: id.chars().take(128).collect(),
        })?;
    Ok(json_body(StatusCode::OK, &model_view(model)))
}

/// The receipt of a call paid with x402.
struct Paid {
    transaction: String,
    payer: crate::crypto::eth::Address,
}

/// Who pays for a call.
struct Payer {
    organization: Uuid,
    key: Option<Uuid>,
    app: Option<Uuid>,
    test: bool,
    paid: Option<Paid>,
}

/// The price of a call paid per request: its reservation rounded up to the cent (SPEC §9).
pub fn per_request_price(reservation_micros: i64) -> i64 {
    (reservation_micros.max(1) + 9_999) / 10_000 * 10_000
}

/// The credential's account, or for a call without one (x402 on), the payment's: a 402 with
/// this call's price when there is none.
async fn payer(
    state: &AppState,
    call: &Call,
    reservation_micros: i64,
) -> Result<Result<Payer, Response<Body>>, ApiError> {
    if let Some(principal) = &call.principal {
        let key = principal.api_key();
        return Ok(Ok(Payer {
            organization: principal.organization().id,
            key: key.map(|k| k.id),
            app: key.and_then(|k| k.app_id),
            test: key.is_some_and(|k| k.key_type == KeyType::Test),
            paid: None,
        }));
    }
    let x402 = &state.config.x402;
    let Some(pay_to) = x402.pay_to else {
        return Err(ApiError::Unauthorized);
    };
    if x402.settlement == crate::x402::Settlement::None {
        return Err(ApiError::ServiceUnavailable(
            "x402 settlement is not configured (--x402-facilitator or --x402-settlement)".into(),
        ));
    }
    let price = per_request_price(reservation_micros);
    let amount = x402.network.atomic_units(price).ok_or_else(|| {
        ApiError::ServiceUnavailable("the configured token cannot express this price".into())
    })?;
    let resource = format!(
        "{}{}",
        state.config.public_url.url.trim_end_matches('/'),
        call.parts.uri.path()
    );
    let offer = Offer {
        network: &x402.network,
        pay_to,
        amount,
        resource: &resource,
        description: "Eliza Cloud metered call",
    };
    let Some(header) = payment_header(&call.parts.headers) else {
        return Ok(Err(payment_required(
            &offer,
            "X-PAYMENT header is required",
        )));
    };
    let collected = collect(state, header, &offer, price, false, |payer| {
        CreditTo::EvmWallet(payer.to_lower_hex())
    })
    .await;
    match collected {
        Ok(Collected {
            record,
            transaction,
            payer,
            ..
        }) => {
            state.metrics.record_credits_topped_up(price);
            tracing::info!(
                organization = %record.organization_id,
                amount_micros = price,
                "x402 payment for a metered call credited"
            );
            Ok(Ok(Payer {
                organization: record.organization_id,
                key: None,
                app: None,
                test: false,
                paid: Some(Paid { transaction, payer }),
            }))
        }
        Err(Refusal::Answer(response)) => Ok(Err(response)),
        Err(Refusal::Error(e)) => Err(e),
    }
}

/// What a call may cost: its reservation (its largest cost), the input tokens by the counting
/// rule, and for images the price charged whole.
struct Charge {
    reservation_micros: i64,
    counted_input: u64,
    fixed_cost: Option<i64>,
    /// Input and output tokens at most (an app's `perToken` price is reserved on them).
    largest_tokens: u64,
}

/// The permission a metered route needs of an app a call goes through.
fn resource_of(endpoint: &str) -> Resource {
    match endpoint {
        "embeddings" => Resource::EMBEDDINGS,
        "images.generations" => Resource::IMAGES,
        _ => Resource::CHAT,
    }
}

/// The app a call names in `X-App-Id` (SPEC §10): a call made through it by its end user, with
/// the app's permissions, allowed origins and price applied on top of the caller's own. An
/// unknown or inactive app is 404; an app key may only name its own app (which changes nothing).
fn through_app(state: &AppState, call: &Call, endpoint: &str) -> Result<Option<Through>, ApiError> {
    let Some(value) = call.parts.headers.get("x-app-id") else {
        return Ok(None);
    };
    let named = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<Uuid>().ok());
    if let Some(own) = call
        .principal
        .as_ref()
        .and_then(|p| p.api_key())
        .and_then(|k| k.app_id)
    {
        return if named == Some(own) {
            Ok(None)
        } else {
            Err(ApiError::Forbidden {
                message: "An app key calls only as its own app; X-App-Id names another".into(),
                required: None,
            })
        };
    }
    let Some(id) = named else {
        return Err(ApiError::NotFound);
    };
    let app = state
        .store
        .read(|txn| crate::store::apps::get_app(txn, id))?
        .filter(|a| a.is_active)
        .ok_or(ApiError::NotFound)?;
    let resource = resource_of(endpoint);
    if !Grant::from_stored(&app.permissions).allows(resource, Level::Write) {
        return Err(ApiError::Forbidden {
            message: format!("This app's permissions do not include {}", resource.name()),
            required: Some(resource.required(Level::Write)),
        });
    }
    if let Some(origin) = call.parts.headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default().to_ascii_lowercase();
        if !app
            .allowed_origins
            .iter()
            .any(|pattern| super::apps::origin_matches(pattern, &origin))
        {
            return Err(ApiError::OriginNotAllowed);
        }
    }
    let (per_request, per_token) = if app.monetization_enabled {
        (app.per_request_micros, app.per_token_micros)
    } else {
        (0, 0)
    };
    Ok(Some(Through {
        app: app.id,
        owner: app.organization_id,
        per_request_micros: per_request,
        per_token_micros: per_token,
    }))
}

/// Who pays ([`payer`]: a 402 to answer when nobody does yet), then the call's reservation and
/// meter ([`admit`]).
async fn pay_and_admit(
    state: &AppState,
    call: &Call,
    endpoint: &'static str,
    model: &Model,
    mut charge: Charge,
) -> Result<Result<(Payer, Meter), Response<Body>>, ApiError> {
    let through = through_app(state, call, endpoint)?;
    if let Some(t) = &through {
        charge.reservation_micros = charge
            .reservation_micros
            .saturating_add(t.fee(charge.largest_tokens));
    }
    let payer = match payer(state, call, charge.reservation_micros).await? {
        Ok(p) => p,
        Err(answer) => return Ok(Err(answer)),
    };
    let meter = admit(state, call, &payer, endpoint, model, charge, through)?;
    Ok(Ok((payer, meter)))
}

/// Reserves the call's largest cost and makes its meter; test keys reserve nothing.
fn admit(
    state: &AppState,
    call: &Call,
    payer: &Payer,
    endpoint: &'static str,
    model: &Model,
    charge: Charge,
    through: Option<Through>,
) -> Result<Meter, ApiError> {
    let Charge {
        reservation_micros,
        counted_input,
        fixed_cost,
        ..
    } = charge;
    let gateway = &state.gateway;
    let reservation = if payer.test {
        None
    } else {
        match gateway
            .billing
            .reserve(payer.organization, reservation_micros)
        {
            Ok(r) => Some(r),
            Err(ReserveError::Short(short)) => {
                return Err(ApiError::InsufficientCredits {
                    message: format!(
                        "This call reserves ${} (its largest possible cost at the model's price) \
                         but ${} is available; lower max_tokens (or n) or add credits",
                        format_dollars(short.reservation_micros),
                        format_dollars(short.available_micros)
                    ),
                });
            }
            Err(ReserveError::Store(e)) => return Err(e.into()),
        }
    };
    let context = CallContext {
        call_id: Uuid::new_v4(),
        request_id: call.request_id.clone(),
        organization: payer.organization,
        key: payer.key,
        app: payer.app,
        // An app key's end user is the one it names; a call through an app is the caller's.
        end_user: match (&through, &call.principal) {
            (Some(_), Some(principal)) => Some(principal.user().id.to_string()),
            (Some(_), None) => None,
            (None, _) => payer.app.and_then(|_| end_user_of(&call.parts.headers)),
        },
        endpoint,
        model: model.clone(),
        markup: gateway.config.markup_percent,
        test: payer.test,
        through,
    };
    let sinks = MeterSinks {
        usage: state.usage.clone(),
        metrics: state.metrics.clone(),
        clock: state.clock.clone(),
    };
    Ok(Meter::new(
        context,
        reservation,
        sinks,
        counted_input,
        fixed_cost,
    ))
}

/// Longest `X-App-User-Id` kept.
const MAX_END_USER_LEN: usize = 128;

/// The app's end user a call names with `X-App-User-Id` (SPEC §10): printable ASCII up to 128
/// bytes, else none.
fn end_user_of(headers: &http::HeaderMap) -> Option<String> {
    let value = headers.get("x-app-user-id")?.to_str().ok()?.trim();
    let sane = !value.is_empty()
        && value.len() <= MAX_END_USER_LEN
        && value.bytes().all(|b| b.is_ascii_graphic());
    sane.then(|| value.to_string())
}

/// The provider that serves a call: test keys always get `dev`.
fn provider_of(model: &Model, payer: &Payer) -> Provider {
    if payer.test {
        Provider::Dev
    } else {
        model.provider
    }
}

fn overhead_value(total: Duration, provider: Duration) -> HeaderValue {
    let micros = total.saturating_sub(provider).as_micros();
    let text = format!("{}.{:03}", micros / 1000, micros % 1000);
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("0.000"))
}

/// Finishes a whole answer: the meter charges the call (its per-call commit awaited), and the
/// answer gets the cost, overhead, balance and receipt headers.
async fn whole_answer(
    state: &AppState,
    call: &Call,
    payer: &Payer,
    mut meter: Meter,
    mut response: Response<Body>,
    provider_time: Duration,
) -> Response<Body> {
    let (cost, commit) = meter.finish(End::Completed);
    if let Some(commit) = commit {
        let _ = commit.await;
    }
    let headers = response.headers_mut();
    headers.insert(COST.clone(), HeaderValue::from(cost));
    if let Some(paid) = &payer.paid {
        receipt_headers(
            headers,
            &state.config.x402.network,
            &paid.transaction,
            &paid.payer,
        );
        match state.gateway.billing.balance(payer.organization) {
            Ok(balance) => {
                headers.insert(BALANCE.clone(), HeaderValue::from(balance));
            }
            Err(e) => tracing::error!(error = %e, "balance unreadable after a paid call"),
        }
    }
    headers.insert(
        OVERHEAD.clone(),
        overhead_value(call.started.elapsed(), provider_time),
    );
    response
}

/// The caller's body with our fields for the upstream: its model name, and (chat) the output cap
/// in the field the caller used (`max_tokens` when it named none).
fn upstream_body(mut body: Map<String, Value>, model: &Model) -> Map<String, Value> {
    body.insert("model".into(), Value::String(model.upstream_model.clone()));
    body
}

/// `POST /api/v1/chat/completions`.
pub async fn chat(state: &AppState, call: &Call) -> Result<Response<Body>, ApiError> {
    let gateway = &state.gateway;
    let mut request = parse_chat(&call.body)?;
    let model = model_of(&gateway.config.models, &request.model, Kind::Chat)?;
    let cap = request
        .requested_cap
        .map_or(model.max_output_tokens, |c| c.min(model.max_output_tokens));
    let largest_output = u64::from(cap).saturating_mul(u64::from(request.n));
    let markup = gateway.config.markup_percent;
    let reservation = token_cost(model, request.input_tokens, largest_output, markup);
    let charge = Charge {
        reservation_micros: reservation,
        counted_input: request.input_tokens,
        fixed_cost: None,
        largest_tokens: request.input_tokens.saturating_add(largest_output),
    };
    let (payer, mut meter) =
        match pay_and_admit(state, call, "chat.completions", model, charge).await? {
            Ok(admitted) => admitted,
            Err(answer) => return Ok(answer),
        };
    let id = format!("chatcmpl-{}", Uuid::new_v4().simple());
    let created = state.now().millis() / 1000;
    match provider_of(model, &payer) {
        Provider::Dev => {
            let choices = dev::chat(&model.id, request.messages(), request.n, cap);
            let text_len: usize = choices.iter().map(|c| c.text().len()).sum();
            let usage = Usage {
                prompt_tokens: request.input_tokens,
                completion_tokens: tokens::count_len(text_len),
            };
            if request.stream {
                let frames = dev_stream_frames(
                    &id,
                    created,
                    &model.id,
                    &choices,
                    request.include_usage,
                    usage,
                );
                let body = DevStream {
                    frames: frames.into(),
                    meter: Some(meter),
                    usage,
                };
                return Ok(stream_response(
                    state,
                    &payer,
                    Body::Boxed(body.boxed()),
                    call.started.elapsed(),
                ));
            }
            meter.add_output_bytes(text_len as u64);
            meter.report(usage);
            let answer = json!({
                "id": id,
                "object": "chat.completion",
                "created": created,
                "model": model.id,
                "system_fingerprint": "eliza-cloud-dev",
                "choices": choices.iter().enumerate().map(|(index, c)| json!({
                    "index": index,
                    "message": {"role": "assistant", "content": c.text(), "refusal": null},
                    "logprobs": null,
                    "finish_reason": c.finish_reason,
                })).collect::<Vec<_>>(),
                "usage": usage_view(usage),
            });
            let response = json_body(StatusCode::OK, &answer);
            Ok(whole_answer(state, call, &payer, meter, response, Duration::ZERO).await)
        }
        Provider::OpenAiCompatible => {
            let Some(upstream) = gateway.upstream.as_ref() else {
                meter.fail(&ApiError::Internal);
                return Err(ApiError::Internal);
            };
            let mut body = upstream_body(std::mem::take(&mut request.raw), model);
            // The cap in every field the caller used (`max_tokens` when it named none), so no
            // provider can produce more than was reserved.
            let mut capped = false;
            for field in ["max_completion_tokens", "max_tokens"] {
                if body.contains_key(field) {
                    body.insert(field.into(), Value::from(cap));
                    capped = true;
                }
            }
            if !capped {
                body.insert("max_tokens".into(), Value::from(cap));
            }
            if request.stream {
                // Usage is asked for always, and hidden again if the caller did not ask.
                let mut options = match body.remove("stream_options") {
                    Some(Value::Object(options)) => options,
                    _ => Map::new(),
                };
                options.insert("include_usage".into(), Value::Bool(true));
                body.insert("stream_options".into(), Value::Object(options));
            }
            let provider_started = Instant::now();
            let answer = upstream
                .post(
                    "/chat/completions",
                    Value::Object(body).to_string().into_bytes(),
                )
                .await;
            let response = match answer {
                Ok(r) => r,
                Err(e) => {
                    let e = api_error(e);
                    meter.fail(&e);
                    return Err(e);
                }
            };
            if request.stream {
                let waited = provider_started.elapsed();
                let body = UpstreamStream::new(
                    response.into_body(),
                    meter,
                    request.include_usage,
                    upstream.timeout,
                    gateway.config.keep_alive_after,
                );
                return Ok(stream_response(
                    state,
                    &payer,
                    Body::Boxed(body.boxed()),
                    call.started.elapsed().saturating_sub(waited),
                ));
            }
            let bytes = match read_body(response.into_body(), upstream.timeout, MAX_UPSTREAM_ANSWER)
                .await
            {
                Ok(b) => b,
                Err(e) => {
                    let e = api_error(e);
                    meter.fail(&e);
                    return Err(e);
                }
            };
            let provider_time = provider_started.elapsed();
            let Ok(value) = serde_json::from_slice::<Value>(&bytes) else {
                let e = api_error(UpstreamError::Malformed);
                meter.fail(&e);
                return Err(e);
            };
            meter.add_output_bytes(whole_content_bytes(&value));
            if let Some(usage) = Usage::of(&value) {
                meter.report(usage);
            }
            let response = json_response(bytes);
            Ok(whole_answer(state, call, &payer, meter, response, provider_time).await)
        }
    }
}

fn json_response(bytes: Bytes) -> Response<Body> {
    let mut response = Response::new(crate::web::body::full(bytes));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The output bytes of a whole chat completion: every choice's message, by the rule of
/// [`stream::output_bytes`].
fn whole_content_bytes(value: &Value) -> u64 {
    value
        .get("choices")
        .and_then(Value::as_array)
        .map(|choices| {
            choices
                .iter()
                .filter_map(|c| c.get("message"))
                .map(stream::output_bytes)
                .sum()
        })
        .unwrap_or(0)
}

fn usage_view(usage: Usage) -> Value {
    json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens.saturating_add(usage.completion_tokens),
    })
}

fn stream_response(
    state: &AppState,
    payer: &Payer,
    body: Body,
    overhead: Duration,
) -> Response<Body> {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    if let Some(paid) = &payer.paid {
        receipt_headers(
            headers,
            &state.config.x402.network,
            &paid.transaction,
            &paid.payer,
        );
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tells nginx-like proxies not to buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    headers.insert(OVERHEAD.clone(), overhead_value(overhead, Duration::ZERO));
    response
}

/// The chunks of a dev answer in OpenAI's order: the role, the words, the finish of each choice,
/// then (when asked) the usage chunk, then `[DONE]`. Each with the content bytes it carries.
fn dev_stream_frames(
    id: &str,
    created: i64,
    model: &str,
    choices: &[dev::Choice],
    include_usage: bool,
    usage: Usage,
) -> Vec<(Bytes, u64)> {
    let chunk = |choices: Value| {
        let mut value = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "eliza-cloud-dev",
            "choices": choices,
        });
        if include_usage && let Some(map) = value.as_object_mut() {
            map.insert("usage".into(), Value::Null);
        }
        stream::frame(value.to_string().as_bytes())
    };
    let mut frames = Vec::new();
    for (index, choice) in choices.iter().enumerate() {
        frames.push((
            chunk(json!([{"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}])),
            0,
        ));
        for piece in &choice.pieces {
            frames.push((
                chunk(json!([{"index": index, "delta": {"content": piece}, "logprobs": null, "finish_reason": null}])),
                piece.len() as u64,
            ));
        }
        frames.push((
            chunk(json!([{"index": index, "delta": {}, "logprobs": null, "finish_reason": choice.finish_reason}])),
            0,
        ));
    }
    if include_usage {
        let value = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "eliza-cloud-dev",
            "choices": [],
            "usage": usage_view(usage),
        });
        frames.push((stream::frame(value.to_string().as_bytes()), 0));
    }
    frames.push((stream::frame(stream::DONE), 0));
    frames
}

/// The dev provider's stream: its chunks, one frame per poll, metered as they go out.
struct DevStream {
    frames: VecDeque<(Bytes, u64)>,
    meter: Option<Meter>,
    usage: Usage,
}

impl http_body::Body for DevStream {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match this.frames.pop_front() {
            Some((bytes, content)) => {
                if let Some(meter) = &mut this.meter {
                    meter.add_output_bytes(content);
                }
                if this.frames.is_empty()
                    && let Some(mut meter) = this.meter.take()
                {
                    meter.report(this.usage);
                    meter.finish(End::Completed);
                }
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
            None => Poll::Ready(None),
        }
    }
}

/// The error line sent once a stream has started (SPEC §9), then the stream ends.
fn stream_error(message: &str, code: &str) -> Bytes {
    let value =
        json!({"error": {"message": message, "type": "api_error", "param": null, "code": code}});
    stream::frame(value.to_string().as_bytes())
}

/// An upstream's stream passed through chunk by chunk as it arrives: each complete event is
/// forwarded at once (the usage chunk hidden when the caller did not ask for it), metered as it
/// goes, with keep-alive comments during long silences and an error line when the upstream
/// breaks or stays silent past the timeout. Dropped (the client went away), it drops the
/// upstream's body, which closes that connection, and its meter charges what was read.
struct UpstreamStream {
    // Declared first so it is dropped first: the call is charged before the upstream's
    // connection closes.
    meter: Option<Meter>,
    body: Incoming,
    parser: stream::Parser,
    queue: VecDeque<Bytes>,
    include_usage: bool,
    timeout: Duration,
    keep_alive_after: Duration,
    silence: Pin<Box<tokio::time::Sleep>>,
    keep_alive: Pin<Box<tokio::time::Sleep>>,
    done: bool,
}

impl UpstreamStream {
    fn new(
        body: Incoming,
        meter: Meter,
        include_usage: bool,
        timeout: Duration,
        keep_alive_after: Duration,
    ) -> UpstreamStream {
        UpstreamStream {
            body,
            parser: stream::Parser::default(),
            queue: VecDeque::new(),
            meter: Some(meter),
            include_usage,
            timeout,
            keep_alive_after,
            silence: Box::pin(tokio::time::sleep(timeout)),
            keep_alive: Box::pin(tokio::time::sleep(keep_alive_after)),
            done: false,
        }
    }

    fn end(&mut self, end: End, last: Option<Bytes>) {
        if let Some(bytes) = last {
            self.queue.push_back(bytes);
        }
        if let Some(mut meter) = self.meter.take() {
            meter.finish(end);
        }
        self.done = true;
    }

    /// Takes bytes of the upstream's stream; answers how many events they completed.
    fn take_data(&mut self, data: &[u8]) -> usize {
        let events = match self.parser.push(data) {
            Ok(events) => events,
            Err(stream::ParseError::TooLong) => {
                tracing::warn!("upstream stream event too long; stream ended");
                let line = stream_error(
                    "The upstream sent an event that is too long",
                    "UPSTREAM_ERROR",
                );
                self.end(End::Failed, Some(line));
                return 1;
            }
        };
        let count = events.len();
        for event in events {
            if self.done {
                return count;
            }
            match stream::read_chunk(&event.data) {
                Chunk::Done => {
                    self.end(End::Completed, Some(stream::frame(stream::DONE)));
                }
                Chunk::Error => {
                    self.end(End::Failed, Some(stream::frame(&event.data)));
                }
                Chunk::Completion {
                    content_bytes,
                    usage,
                    usage_only,
                } => {
                    if let Some(meter) = &mut self.meter {
                        meter.add_output_bytes(content_bytes);
                        if let Some(usage) = usage {
                            meter.report(usage);
                        }
                    }
                    if !usage_only || self.include_usage {
                        self.queue.push_back(stream::frame(&event.data));
                    }
                }
                Chunk::Other => self.queue.push_back(stream::frame(&event.data)),
            }
        }
        count
    }
}

impl http_body::Body for UpstreamStream {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        loop {
            if let Some(bytes) = this.queue.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    // Only events count as an answer: comment lines alone (an upstream's own
                    // pings) do not keep a stream and its reservation open past the timeout.
                    if let Ok(data) = frame.into_data()
                        && this.take_data(&data) > 0
                    {
                        let now = tokio::time::Instant::now();
                        this.silence.as_mut().reset(now + this.timeout);
                        this.keep_alive.as_mut().reset(now + this.keep_alive_after);
                    }
                }
                Poll::Ready(Some(Err(_))) => {
                    tracing::warn!("upstream stream broke");
                    let line = stream_error("The upstream connection broke", "UPSTREAM_ERROR");
                    this.end(End::Failed, Some(line));
                }
                Poll::Ready(None) => {
                    // Ended without `[DONE]`: a cut answer, said as such (never a made-up end).
                    tracing::warn!("upstream stream ended without [DONE]");
                    let line =
                        stream_error("The upstream stream ended before its end", "UPSTREAM_ERROR");
                    this.end(End::Failed, Some(line));
                }
                Poll::Pending => {
                    if this.silence.as_mut().poll(cx).is_ready() {
                        tracing::warn!("upstream stream silent past the timeout");
                        let line = stream_error(
                            "The upstream model provider stopped answering",
                            "UPSTREAM_TIMEOUT",
                        );
                        if let Some(meter) = &mut this.meter {
                            meter.set_failure(504, "UPSTREAM_TIMEOUT");
                        }
                        this.end(End::Failed, Some(line));
                        continue;
                    }
                    if this.keep_alive.as_mut().poll(cx).is_ready() {
                        let next = tokio::time::Instant::now() + this.keep_alive_after;
                        this.keep_alive.as_mut().reset(next);
                        this.queue.push_back(Bytes::from_static(stream::KEEP_ALIVE));
                        continue;
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// Most numbers in one embeddings answer (inputs × dimensions): 16 MiB of floats.
pub(crate) const MAX_EMBEDDING_FLOATS: usize = 4 << 20;

#[derive(serde::Serialize)]
#[serde(untagged)]
enum EmbeddingData {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(serde::Serialize)]
struct EmbeddingView {
    object: &'static str,
    index: usize,
    embedding: EmbeddingData,
}

/// The answer serialised straight from the vectors (no JSON tree of numbers in between).
#[derive(serde::Serialize)]
struct EmbeddingsAnswer<'a> {
    object: &'static str,
    data: Vec<EmbeddingView>,
    model: &'a str,
    usage: Value,
}

/// `POST /api/v1/embeddings`.
pub async fn embeddings(state: &AppState, call: &Call) -> Result<Response<Body>, ApiError> {
    let gateway = &state.gateway;
    let mut request = parse_embeddings(&call.body)?;
    let model = model_of(&gateway.config.models, &request.model, Kind::Embedding)?;
    let dimensions = request.dimensions.unwrap_or(model.dimensions);
    if dimensions > model.dimensions {
        return Err(ApiError::Validation {
            message: format!("dimensions: at most {} for {}", model.dimensions, model.id),
            details: json!({ "dimensions": format!("at most {}", model.dimensions) }),
        });
    }
    let floats = request.inputs.len().saturating_mul(dimensions as usize);
    if floats > MAX_EMBEDDING_FLOATS {
        return Err(ApiError::Validation {
            message: format!(
                "input: {} inputs of {dimensions} dimensions is more than {MAX_EMBEDDING_FLOATS} \
                 numbers in one answer; send fewer inputs per call",
                request.inputs.len()
            ),
            details: json!({ "input": format!("at most {MAX_EMBEDDING_FLOATS} inputs × dimensions") }),
        });
    }
    let reservation = token_cost(
        model,
        request.input_tokens,
        0,
        gateway.config.markup_percent,
    );
    let charge = Charge {
        reservation_micros: reservation,
        counted_input: request.input_tokens,
        fixed_cost: None,
        largest_tokens: request.input_tokens,
    };
    let (payer, mut meter) = match pay_and_admit(state, call, "embeddings", model, charge).await? {
        Ok(admitted) => admitted,
        Err(answer) => return Ok(answer),
    };
    match provider_of(model, &payer) {
        Provider::Dev => {
            let data: Vec<EmbeddingView> = request
                .inputs
                .iter()
                .enumerate()
                .map(|(index, input)| {
                    let vector = dev::embedding(&model.id, input, dimensions);
                    let embedding = match request.encoding {
                        Encoding::Float => EmbeddingData::Float(vector),
                        Encoding::Base64 => {
                            let bytes: Vec<u8> =
                                vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                            EmbeddingData::Base64(STANDARD.encode(bytes))
                        }
                    };
                    EmbeddingView {
                        object: "embedding",
                        index,
                        embedding,
                    }
                })
                .collect();
            meter.report(Usage {
                prompt_tokens: request.input_tokens,
                completion_tokens: 0,
            });
            let answer = EmbeddingsAnswer {
                object: "list",
                data,
                model: &model.id,
                usage: json!({"prompt_tokens": request.input_tokens, "total_tokens": request.input_tokens}),
            };
            let response = json_body(StatusCode::OK, &answer);
            Ok(whole_answer(state, call, &payer, meter, response, Duration::ZERO).await)
        }
        Provider::OpenAiCompatible => {
            let body = upstream_body(std::mem::take(&mut request.raw), model);
            let (bytes, provider_time) =
                forward_whole(state, &mut meter, "/embeddings", body, MAX_UPSTREAM_ANSWER).await?;
            if let Ok(value) = serde_json::from_slice::<Value>(&bytes)
                && let Some(usage) = Usage::of(&value)
            {
                meter.report(usage);
            }
            let response = json_response(bytes);
            Ok(whole_answer(state, call, &payer, meter, response, provider_time).await)
        }
    }
}

/// Forwards a whole call upstream and reads its whole JSON answer; a failure is charged nothing.
async fn forward_whole(
    state: &AppState,
    meter: &mut Meter,
    path: &str,
    body: Map<String, Value>,
    max: usize,
) -> Result<(Bytes, Duration), ApiError> {
    let Some(upstream) = state.gateway.upstream.as_ref() else {
        meter.fail(&ApiError::Internal);
        return Err(ApiError::Internal);
    };
    let started = Instant::now();
    let result = async {
        let response = upstream
            .post(path, Value::Object(body).to_string().into_bytes())
            .await?;
        let bytes = read_body(response.into_body(), upstream.timeout, max).await?;
        if serde_json::from_slice::<Value>(&bytes).is_err() {
            return Err(UpstreamError::Malformed);
        }
        Ok(bytes)
    }
    .await;
    match result {
        Ok(bytes) => Ok((bytes, started.elapsed())),
        Err(e) => {
            let e = api_error(e);
            meter.fail(&e);
            Err(e)
        }
    }
}

/// `POST /api/v1/images/generations`.
pub async fn images(state: &AppState, call: &Call) -> Result<Response<Body>, ApiError> {
    let gateway = &state.gateway;
    let mut request = parse_images(&call.body)?;
    let models = &gateway.config.models;
    let model = match &request.model {
        Some(id) => model_of(models, id, Kind::Image)?,
        None => models
            .first_of(Kind::Image)
            .ok_or(ApiError::ModelNotFound {
                model: "(default image model)".into(),
            })?,
    };
    let cost = image_cost(model, u64::from(request.n), gateway.config.markup_percent);
    let charge = Charge {
        reservation_micros: cost,
        counted_input: 0,
        fixed_cost: Some(cost),
        largest_tokens: 0,
    };
    let (payer, mut meter) =
        match pay_and_admit(state, call, "images.generations", model, charge).await? {
            Ok(admitted) => admitted,
            Err(answer) => return Ok(answer),
        };
    match provider_of(model, &payer) {
        Provider::Dev => {
            let prompt = request.prompt.clone();
            let (n, side) = (request.n, request.side);
            // Encoding up to ten 1024² images is real work: off the async threads.
            let images = tokio::task::spawn_blocking(move || {
                (0..n)
                    .map(|index| dev::image(&prompt, index, side))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await
            .map_err(|_| ApiError::Internal)
            .and_then(|encoded| {
                encoded.map_err(|e| {
                    tracing::error!(error = %e, "dev image encoding failed");
                    ApiError::Internal
                })
            });
            let images = match images {
                Ok(images) => images,
                Err(e) => {
                    meter.fail(&e);
                    return Err(e);
                }
            };
            let data: Vec<Value> = images
                .iter()
                .map(|png| json!({"b64_json": STANDARD.encode(png), "revised_prompt": request.prompt}))
                .collect();
            let answer =
                json!({"created": state.now().millis() / 1000, "data": data, "size": request.size});
            let response = json_body(StatusCode::OK, &answer);
            Ok(whole_answer(state, call, &payer, meter, response, Duration::ZERO).await)
        }
        Provider::OpenAiCompatible => {
            let mut body = upstream_body(std::mem::take(&mut request.raw), model);
            // b64_json is the default here (SPEC §9); OpenAI's own default would be a URL.
            body.entry("response_format")
                .or_insert_with(|| Value::String("b64_json".into()));
            let (bytes, provider_time) = forward_whole(
                state,
                &mut meter,
                "/images/generations",
                body,
                MAX_UPSTREAM_IMAGES,
            )
            .await?;
            let response = json_response(bytes);
            Ok(whole_answer(state, call, &payer, meter, response, provider_time).await)
        }
    }
}
