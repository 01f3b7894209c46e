//! `POST /api/v1/topup/{amount}` (SPEC §7): a credit top-up paid with x402. Without a payment,
//! 402 with both protocol versions; with one, every verification step in order, then settlement
//! (facilitator or `trust-signature`), then the credit and the used-authorization record in one
//! transaction. Nothing is credited before settlement succeeded, and never twice.

use std::collections::HashSet;
use std::sync::Mutex;

use http::{HeaderMap, HeaderValue, Response, StatusCode};
use serde_json::{Value, json};

use crate::auth::Principal;
use crate::auth::wallet::WalletAddress;
use crate::crypto::to_hex;
use crate::money::format_dollars;
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::accounts::{Bonus, Wallet, find_or_create_wallet_account};
use crate::store::keys::KeyType;
use crate::store::payments::{Recorded, authorization_used, record_payment};
use crate::web::Call;
use crate::web::body::{Body, json_body};
use crate::web::error::ApiError;
use crate::x402::facilitator::Facilitator;
use crate::x402::payload::{DecodeError, PaymentPayload};
use crate::x402::required::{
    Offer, payment_response, v1_body, v1_requirement, v2_required_header, v2_requirement,
};
use crate::x402::verify::{Reason, Requirements, VerifiedPayment, verify_payment};
use crate::x402::{Settlement, X402Config};

const V1_HEADER: &str = "x-payment";
const V2_HEADER: &str = "payment-signature";
const DESCRIPTION: &str = "Eliza Cloud credit top-up";

/// Authorizations being settled right now: a second submission of one of them waits for
/// nothing and is refused at once, so one authorization is never settled twice concurrently.
#[derive(Default)]
pub struct InFlight(Mutex<HashSet<String>>);

struct InFlightGuard<'a> {
    set: &'a InFlight,
    key: String,
}

impl InFlight {
    fn claim(&self, key: &str) -> Option<InFlightGuard<'_>> {
        let mut set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        set.insert(key.to_string()).then(|| InFlightGuard {
            set: self,
            key: key.to_string(),
        })
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        let mut set = self.set.0.lock().unwrap_or_else(|e| e.into_inner());
        set.remove(&self.key);
    }
}

/// The facilitator client of the configuration, if it settles through one.
pub fn facilitator_of(config: &X402Config) -> Result<Option<Facilitator>, String> {
    match &config.settlement {
        Settlement::Facilitator(url) => Facilitator::new(
            url,
            config.facilitator_timeout,
            config.facilitator_ca_pem.as_deref(),
        )
        .map(Some),
        Settlement::TrustSignature | Settlement::None => Ok(None),
    }
}

/// A 402: the v1 body with `error`, and the v2 `PAYMENT-REQUIRED` header.
fn payment_required(offer: &Offer<'_>, error: &str) -> Response<Body> {
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

/// Whether the request carries a payment header (of either version).
pub fn has_payment(headers: &HeaderMap) -> bool {
    payment_header(headers).is_some()
}

/// The payment header: `X-PAYMENT` (v1), else `PAYMENT-SIGNATURE` (v2).
fn payment_header(headers: &HeaderMap) -> Option<&[u8]> {
    headers
        .get(V1_HEADER)
        .or_else(|| headers.get(V2_HEADER))
        .map(HeaderValue::as_bytes)
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
    let payment = match PaymentPayload::decode(header) {
        Ok(p) => p,
        Err(Some(e)) => {
            return Err(match e {
                DecodeError::TooLarge | DecodeError::Base64 | DecodeError::Json => {
                    ApiError::InvalidJson(e.message().into())
                }
            });
        }
        Err(None) => return Ok(refused(state, &offer, &Reason::InvalidPayload)),
    };
    // A test key pays only on test networks (SPEC §4).
    let test_key = principal
        .and_then(Principal::api_key)
        .is_some_and(|k| k.key_type == KeyType::Test);
    let required = Requirements {
        network,
        pay_to,
        amount: atomic,
        mainnet_allowed: !test_key,
    };
    let now_secs = u64::try_from(state.now().millis() / 1000).unwrap_or(0);
    let verified = match verify_payment(&payment, &required, now_secs) {
        Ok(v) => v,
        Err(reason) => return Ok(refused(state, &offer, &reason)),
    };
    let used_key = verified.authorization_key.clone();
    let used = state
        .store
        .read_blocking(move |txn| authorization_used(txn, &used_key))
        .await?;
    if used {
        return Ok(refused(state, &offer, &Reason::InvalidTransactionState));
    }
    let Some(_claim) = state.x402_in_flight.claim(&verified.authorization_key) else {
        return Ok(refused(state, &offer, &Reason::InvalidTransactionState));
    };
    let transaction = match settle(state, &payment, &offer, &verified).await? {
        Ok(transaction) => transaction,
        Err(reason) => return Ok(refused(state, &offer, &reason)),
    };
    // SPEC §7's order: the wallet of the signature headers (with or without an account yet),
    // else the other credential's organization, else the body's wallet, else the payer.
    credit(
        state,
        principal,
        new_wallet.or(credit_to_body),
        &payment,
        &offer,
        &verified,
        micros,
        &transaction,
    )
    .await
}

/// Settles a verified payment: `Ok(Ok(transaction))`, `Ok(Err(reason))` for a 402, `Err` when
/// the facilitator could not be asked (503).
async fn settle(
    state: &AppState,
    payment: &PaymentPayload,
    offer: &Offer<'_>,
    verified: &VerifiedPayment,
) -> Result<Result<String, Reason>, ApiError> {
    let facilitator = match (&state.config.x402.settlement, &state.facilitator) {
        // trust-signature: the verified authorization is the settlement; its digest names it.
        (Settlement::TrustSignature, _) => {
            return Ok(Ok(format!("0x{}", to_hex(&verified.digest))));
        }
        (Settlement::Facilitator(_), Some(f)) => f,
        (Settlement::Facilitator(_), None) | (Settlement::None, _) => {
            return Err(ApiError::ServiceUnavailable(
                "x402 settlement is not available".into(),
            ));
        }
    };
    let requirements = if payment.version >= 2 {
        v2_requirement(offer)
    } else {
        v1_requirement(offer)
    };
    let request = json!({
        "x402Version": payment.version,
        "paymentPayload": payment.raw,
        "paymentRequirements": requirements,
    });
    let unavailable = |step: &str, e: &dyn std::fmt::Display| {
        tracing::warn!(step, error = %e, key = %verified.authorization_key, "x402 facilitator call failed");
        ApiError::ServiceUnavailable(format!("the x402 facilitator could not {step} the payment"))
    };
    let checked = facilitator
        .verify(&request)
        .await
        .map_err(|e| unavailable("verify", &e))?;
    if !checked.is_valid {
        let reason = checked.invalid_reason.unwrap_or_default();
        return Ok(Err(Reason::from_facilitator(
            &reason,
            Reason::UnexpectedVerifyError,
        )));
    }
    let settled = facilitator
        .settle(&request)
        .await
        .map_err(|e| unavailable("settle", &e))?;
    if !settled.success {
        let reason = settled.error_reason.unwrap_or_default();
        return Ok(Err(Reason::from_facilitator(
            &reason,
            Reason::UnexpectedSettleError,
        )));
    }
    Ok(Ok(settled.transaction))
}

/// Credits the account SPEC §7 names, in one transaction with the used-authorization record.
#[allow(clippy::too_many_arguments)]
async fn credit(
    state: &AppState,
    principal: Option<&Principal>,
    credit_to_wallet: Option<Wallet>,
    payment: &PaymentPayload,
    offer: &Offer<'_>,
    verified: &VerifiedPayment,
    micros: i64,
    transaction: &str,
) -> Result<Response<Body>, ApiError> {
    let network = offer.network;
    let payer = verified.payer;
    // Wallet headers of a known wallet and other credentials both arrive as a principal; else
    // the wallet to credit (the headers' new wallet, or the body's); else the payer.
    let target = match principal {
        Some(p) => Target::Organization {
            organization_id: p.organization().id,
            wallet: p
                .user()
                .wallet_address
                .clone()
                .or_else(|| p.user().solana_address.clone()),
        },
        None => Target::Wallet(credit_to_wallet.unwrap_or(Wallet::Evm(payer.to_lower_hex()))),
    };
    let key = verified.authorization_key.clone();
    let network_name = network.name.clone();
    let tx = transaction.to_string();
    let now = state.now().millis();
    let written = state
        .store
        .write_blocking(move |txn| {
            let (organization_id, wallet) = match target {
                Target::Organization {
                    organization_id,
                    wallet,
                } => (organization_id, wallet),
                Target::Wallet(wallet) => {
                    let account = find_or_create_wallet_account(txn, &wallet, Bonus::None, now)?;
                    (account.organization.id, Some(wallet.key().to_string()))
                }
            };
            let recorded = record_payment(
                txn,
                &key,
                organization_id,
                &payer.to_lower_hex(),
                &network_name,
                micros,
                &tx,
                now,
            )?;
            Ok::<_, StoreError>((recorded, wallet))
        })
        .await;
    // Settled but not credited is money taken for nothing: say so loudly, with what an operator
    // needs to credit it by hand (`orgs grant-credits --idempotency-key <key>`).
    let (recorded, wallet) = written.inspect_err(|e| {
        tracing::error!(
            key = %verified.authorization_key,
            transaction,
            error = %e,
            "x402 payment settled but not credited"
        );
    })?;
    let Recorded::Credited { record, posted } = recorded else {
        tracing::error!(
            key = %verified.authorization_key,
            transaction,
            "x402 payment settled, but its authorization had already credited"
        );
        return Ok(refused(state, offer, &Reason::InvalidTransactionState));
    };
    state.metrics.record_credits_topped_up(micros);
    tracing::info!(
        network = %network.name,
        amount_micros = micros,
        organization = %record.organization_id,
        "x402 top-up credited"
    );
    let wallet = wallet.map(|w| super::shown_evm_address(&w));
    let shown_network = if payment.version >= 2 {
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
            "newBalance": format_dollars(posted.balance_micros()),
            "newBalance_micros": posted.balance_micros(),
            "payment": {
                "method": "x402",
                "network": shown_network,
                "transaction": transaction,
                "payer": payer.to_checksum(),
            },
        }),
    );
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&payment_response(transaction, &network.name, &payer)) {
        headers.insert("x-payment-response", v);
    }
    if let Ok(v) = HeaderValue::from_str(&payment_response(transaction, &network.caip2(), &payer)) {
        headers.insert("payment-response", v);
    }
    Ok(response)
}

enum Target {
    Organization {
        organization_id: uuid::Uuid,
        wallet: Option<String>,
    },
    Wallet(Wallet),
}
