//! `POST /api/v1/topup/{amount}` (SPEC §7): a credit top-up paid with x402. Without a payment,
//! 402 with both protocol versions; with one, every verification step in order, then settlement
//! and the credit in a task of their own (`x402::settlement`), which this handler only awaits.
//! Nothing is credited before settlement succeeded, and never twice.

use http::{HeaderValue, Response, StatusCode};
use serde_json::{Value, json};

use crate::auth::Principal;
use crate::auth::wallet::WalletAddress;
use crate::crypto::to_hex;
use crate::money::format_dollars;
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::accounts::Wallet;
use crate::store::keys::KeyType;
use crate::store::payments::authorization_used;
use crate::store::settlements::{CreditTo, SettlementRecord, SettlementState, find_settlement};
use crate::web::Call;
use crate::web::body::{Body, json_body};
use crate::web::error::ApiError;
use crate::x402::payload::{DecodeError, PaymentPayload};
use crate::x402::required::{
    Offer, payment_response, v1_body, v1_requirement, v2_required_header, v2_requirement,
};
use crate::x402::settlement::{Job, Outcome, facilitator_request};
use crate::x402::verify::{Reason, Requirements, verify_payment};
use crate::x402::{Settlement, payment_header};

const DESCRIPTION: &str = "Eliza Cloud credit top-up";

/// A 402: the v1 body with `error`, and the v2 `PAYMENT-REQUIRED` header.
pub fn payment_required(offer: &Offer<'_>, error: &str) -> Response<Body> {
    let mut response = json_body(StatusCode::PAYMENT_REQUIRED, &v1_body(offer, error));
    if let Ok(value) = HeaderValue::from_str(&v2_required_header(offer, error)) {
        response.headers_mut().insert("payment-required", value);
    }
    response
}

/// A 402 for a failed payment, counted and logged with its reason.
fn refused(state: &AppState, offer: &Offer<'_>, reason: &Reason) -> Response<Body> {
    state.metrics.record_auth_failure("x402", reason.as_str());
    tracing::info!(reason = reason.as_str(), "x402 payment refused");
    payment_required(offer, reason.as_str())
}

/// The optional body `{walletAddress}`: an EVM or Solana address to credit.
fn wallet_of_body(body: &[u8]) -> Result<Option<Wallet>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| ApiError::InvalidJson("The body is not JSON".into()))?;
    let bad = || ApiError::Validation {
        message: "walletAddress is not an EVM or Solana address".into(),
        details: json!({ "walletAddress": "an EVM (0x + 40 hex) or Solana (base58) address" }),
    };
    match value.get("walletAddress") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => WalletAddress::parse(text)
            .map(|a| Some(a.wallet()))
            .map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

/// `POST /api/v1/topup/{amount}`. The call's `new_wallet` is a wallet whose signature headers
/// were valid but which has no account yet: it is made (without a bonus) in the crediting
/// transaction.
pub async fn topup(
    state: &AppState,
    call: &Call,
    amount_micros: Option<i64>,
) -> Result<Response<Body>, ApiError> {
    let principal = call.principal.as_ref();
    let new_wallet = call.new_wallet.clone();
    let path = call.parts.uri.path();
    let headers = &call.parts.headers;
    let body = &call.body[..];
    let x402 = &state.config.x402;
    let Some(pay_to) = x402.pay_to else {
        return Err(ApiError::ServiceUnavailable(
            "x402 payments are not configured on this server (--x402-pay-to)".into(),
        ));
    };
    if x402.settlement == Settlement::None {
        return Err(ApiError::ServiceUnavailable(
            "x402 settlement is not configured (--x402-facilitator or --x402-settlement)".into(),
        ));
    }
    let allowed: Vec<String> = x402
        .topup_amounts_micros
        .iter()
        .map(|m| {
            format_dollars(*m)
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_string()
        })
        .collect();
    let micros = amount_micros
        .filter(|m| x402.topup_amounts_micros.contains(m))
        .ok_or_else(|| ApiError::Validation {
            message: format!("The top-up amount must be one of {}", allowed.join(", ")),
            details: json!({ "amount": format!("one of {}", allowed.join(", ")) }),
        })?;
    let network = &x402.network;
    let atomic = network.atomic_units(micros).ok_or_else(|| {
        ApiError::ServiceUnavailable("the configured token cannot express this amount".into())
    })?;
    let credit_to_body = wallet_of_body(body)?;
    let resource = format!(
        "{}{path}",
        state.config.public_url.url.trim_end_matches('/')
    );
    let offer = Offer {
        network,
        pay_to,
        amount: atomic,
        resource: &resource,
        description: DESCRIPTION,
    };
    let Some(header) = payment_header(headers) else {
        return Ok(payment_required(&offer, "X-PAYMENT header is required"));
    };
    // A test key pays only on test networks (SPEC §4).
    let test_key = principal
        .and_then(Principal::api_key)
        .is_some_and(|k| k.key_type == KeyType::Test);
    let collected = collect(state, header, &offer, micros, test_key, |payer| {
        // SPEC §7's order: the wallet of the signature headers (with or without an account
        // yet), else the other credential's organization, else the body's wallet, else the payer.
        match (principal, new_wallet.or(credit_to_body)) {
            (Some(p), _) => CreditTo::Organization(p.organization().id),
            (None, Some(wallet)) => CreditTo::of_wallet(&wallet),
            (None, None) => CreditTo::EvmWallet(payer.to_lower_hex()),
        }
    })
    .await;
    let Collected {
        record,
        posted,
        wallet,
        transaction,
        payer,
        version,
    } = match collected {
        Ok(c) => c,
        Err(Refusal::Answer(response)) => return Ok(response),
        Err(Refusal::Error(e)) => return Err(e),
    };
    state.metrics.record_credits_topped_up(micros);
    // Less the metered debits not committed yet, like every balance the API shows (SPEC §9).
    let new_balance = match state.gateway.billing.balance(record.organization_id) {
        Ok(balance) => balance,
        Err(_) => posted.balance_micros(),
    };
    tracing::info!(
        network = %network.name,
        amount_micros = micros,
        organization = %record.organization_id,
        "x402 top-up credited"
    );
    let wallet = match principal {
        Some(p) => p
            .user()
            .wallet_address
            .clone()
            .or_else(|| p.user().solana_address.clone()),
        None => wallet,
    }
    .map(|w| super::shown_evm_address(&w));
    let shown_network = if version >= 2 {
        network.caip2()
    } else {
        network.name.clone()
    };
    let mut response = json_body(
        StatusCode::OK,
        &json!({
            "success": true,
            "amount": format_dollars(micros),
            "amount_micros": micros,
            "walletAddress": wallet,
            "organizationId": record.organization_id,
            "transactionId": record.ledger_entry_id,
            "newBalance": format_dollars(new_balance),
            "newBalance_micros": new_balance,
            "payment": {
                "method": "x402",
                "network": shown_network,
                "transaction": transaction,
                "payer": payer.to_checksum(),
            },
        }),
    );
    receipt_headers(response.headers_mut(), network, &transaction, &payer);
    Ok(response)
}

/// The receipt headers of a settled payment: `X-PAYMENT-RESPONSE` (v1) and `PAYMENT-RESPONSE`
/// (v2), base64 of `{success, transaction, network, payer}`.
pub fn receipt_headers(
    headers: &mut http::HeaderMap,
    network: &crate::x402::Network,
    transaction: &str,
    payer: &crate::crypto::eth::Address,
) {
    if let Ok(v) = HeaderValue::from_str(&payment_response(transaction, &network.name, payer)) {
        headers.insert("x-payment-response", v);
    }
    if let Ok(v) = HeaderValue::from_str(&payment_response(transaction, &network.caip2(), payer)) {
        headers.insert("payment-response", v);
    }
}

/// A payment that settled and was credited.
pub struct Collected {
    pub record: Box<crate::store::payments::PaymentRecord>,
    pub posted: Box<crate::store::ledger::Posted>,
    /// The credited wallet, when the account is a wallet's.
    pub wallet: Option<String>,
    pub transaction: String,
    pub payer: crate::crypto::eth::Address,
    /// The payload's `x402Version`.
    pub version: u64,
}

/// Why no payment was collected: a 402 (or other answer) to send, or an error.
pub enum Refusal {
    Answer(Response<Body>),
    Error(ApiError),
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        Refusal::Error(e.into())
    }
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Refusal::Error(e)
    }
}

/// Verifies the payment `header` against `offer` (every step of SPEC §7 in order), then settles
/// and credits it in a task of its own, which this only awaits. `credit_to` picks the account
/// from the verified payer.
pub async fn collect(
    state: &AppState,
    header: &[u8],
    offer: &Offer<'_>,
    micros: i64,
    test_key: bool,
    credit_to: impl FnOnce(&crate::crypto::eth::Address) -> CreditTo,
) -> Result<Collected, Refusal> {
    let network = offer.network;
    let payment = match PaymentPayload::decode(header) {
        Ok(p) => p,
        Err(Some(e)) => {
            return Err(Refusal::Error(match e {
                DecodeError::TooLarge | DecodeError::Base64 | DecodeError::Json => {
                    ApiError::InvalidJson(e.message().into())
                }
            }));
        }
        Err(None) => {
            return Err(Refusal::Answer(refused(
                state,
                offer,
                &Reason::InvalidPayload,
            )));
        }
    };
    let required = Requirements {
        network,
        pay_to: offer.pay_to,
        amount: offer.amount,
        mainnet_allowed: !test_key,
    };
    let now_secs = u64::try_from(state.now().millis() / 1000).unwrap_or(0);
    let verified = match verify_payment(&payment, &required, now_secs) {
        Ok(v) => v,
        Err(reason) => return Err(Refusal::Answer(refused(state, offer, &reason))),
    };
    let used_key = verified.authorization_key.clone();
    let used = state
        .store
        .read_blocking(move |txn| {
            Ok::<_, StoreError>(
                authorization_used(txn, &used_key)? || find_settlement(txn, &used_key)?.is_some(),
            )
        })
        .await?;
    if used {
        return Err(Refusal::Answer(refused(
            state,
            offer,
            &Reason::InvalidTransactionState,
        )));
    }
    let requirements = if payment.version >= 2 {
        v2_requirement(offer)
    } else {
        v1_requirement(offer)
    };
    let now = state.now().millis();
    let job = Job {
        record: SettlementRecord {
            key: verified.authorization_key.clone(),
            network: network.name.clone(),
            payer: verified.payer.to_lower_hex(),
            amount_micros: micros,
            credit_to: credit_to(&verified.payer),
            state: SettlementState::Settling,
            transaction: None,
            reason: None,
            created_at: now,
            updated_at: now,
        },
        request: facilitator_request(payment.version, &payment.raw, requirements),
        digest_transaction: format!("0x{}", to_hex(&verified.digest)),
    };
    // Settled and credited in a task of its own: this request only waits for the outcome.
    let outcome = state
        .tasks
        .spawn(state.settler().run(job))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, key = %verified.authorization_key, "x402 settlement task failed");
            ApiError::Internal
        })?;
    match outcome {
        Outcome::Credited {
            record,
            posted,
            wallet,
            transaction,
        } => Ok(Collected {
            record,
            posted,
            wallet,
            transaction,
            payer: verified.payer,
            version: payment.version,
        }),
        Outcome::Refused(reason) => Err(Refusal::Answer(refused(state, offer, &reason))),
        Outcome::Unavailable(step) => Err(Refusal::Error(ApiError::ServiceUnavailable(format!(
            "the x402 facilitator could not {step} the payment"
        )))),
        Outcome::Unknown => Err(Refusal::Error(ApiError::ServiceUnavailable(
            "the payment's settlement outcome is unknown; the operator will resolve it".into(),
        ))),
        Outcome::Failed(e) => Err(Refusal::Error(ApiError::from(e))),
    }
}
