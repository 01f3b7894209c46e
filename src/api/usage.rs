//! `GET /api/v1/usage?period=YYYY-MM` (SPEC §12): an organization's metered usage for one month,
//! from the daily aggregate tables plus what the flusher has not written yet, so a call shows
//! here as soon as it ended. An app's key sees only its app's rows.

use std::collections::BTreeMap;

use http::{Response, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::auth::Principal;
use crate::auth::scope::Scope;
use crate::money::format_dollars;
use crate::state::AppState;
use crate::store::keys::list_keys_of_org;
use crate::store::usage::{Dimension, MeteredKey, UsageTotals, metered_dims_between};
use crate::time::civil::{civil_from_days, days_from_civil};
use crate::usage::day_of;
use crate::web::body::{Body, json_body};
use crate::web::error::ApiError;
use crate::web::query::{first, parse_query};

/// A month: its first and last day (days since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub year: i64,
    pub month: u32,
}

impl Period {
    /// `YYYY-MM` with a four-digit year from 1970 and a month 01..12.
    pub fn parse(text: &str) -> Option<Period> {
        let bytes = text.as_bytes();
        if bytes.len() != 7 || bytes.get(4) != Some(&b'-') {
            return None;
        }
        let year = text.get(..4)?;
        let month = text.get(5..)?;
        if !year
            .bytes()
            .chain(month.bytes())
            .all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let year: i64 = year.parse().ok()?;
        let month: u32 = month.parse().ok()?;
        ((1970..=9999).contains(&year) && (1..=12).contains(&month))
            .then_some(Period { year, month })
    }

    pub fn of_day(day: i64) -> Period {
        let (year, month, _) = civil_from_days(day);
        Period { year, month }
    }

    pub fn first_day(self) -> i64 {
        days_from_civil(self.year, self.month, 1)
    }

    pub fn last_day(self) -> i64 {
        let (year, month) = if self.month == 12 {
            (self.year + 1, 1)
        } else {
            (self.year, self.month + 1)
        };
        days_from_civil(year, month, 1) - 1
    }

    pub fn text(self) -> String {
        format!("{:04}-{:02}", self.year, self.month)
    }
}

pub fn date_text(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Every metered row of `org` in the period: stored plus pending, summed by key.
pub async fn rows_of(
    state: &AppState,
    org: Uuid,
    period: Period,
    dims: &'static [Dimension],
    name_prefix: Option<String>,
) -> Result<BTreeMap<MeteredKey, UsageTotals>, ApiError> {
    let (from, to) = (period.first_day(), period.last_day());
    let prefix = name_prefix.clone();
    let stored = state
        .store
        .read_blocking(move |txn| metered_dims_between(txn, org, from, to, dims, prefix.as_deref()))
        .await?;
    let pending = state
        .usage
        .pending_metered(org, from, to)
        .into_iter()
        .filter(|(k, _)| {
            dims.contains(&k.dimension)
                && name_prefix.as_deref().is_none_or(|p| k.name.starts_with(p))
        });
    let mut rows: BTreeMap<MeteredKey, UsageTotals> = BTreeMap::new();
    for (key, totals) in stored.into_iter().chain(pending) {
        rows.entry(key).or_default().add(&totals);
    }
    Ok(rows)
}

/// The organization's metered cost this month (the dashboard's `usage.costThisMonth`).
pub async fn cost_this_month(state: &AppState, org: Uuid) -> Result<i64, ApiError> {
    let period = Period::of_day(day_of(state.now()));
    let rows = rows_of(state, org, period, &[Dimension::Total], None).await?;
    Ok(rows
        .iter()
        .filter(|(k, _)| k.dimension == Dimension::Total)
        .map(|(_, t)| t.cost_micros)
        .fold(0, i64::saturating_add))
}

/// `?period=YYYY-MM`, default this month; else a 400 naming `period`.
pub fn period_of(state: &AppState, query: Option<&str>) -> Result<Period, ApiError> {
    let bad = || ApiError::Validation {
        message: "period must be a month written YYYY-MM".into(),
        details: json!({ "period": "a month written YYYY-MM" }),
    };
    let pairs = parse_query(query.unwrap_or("")).map_err(|_| bad())?;
    match first(&pairs, "period") {
        Some(text) => Period::parse(text).ok_or_else(bad),
        None => Ok(Period::of_day(day_of(state.now()))),
    }
}

pub async fn usage(
    state: &AppState,
    principal: &Principal,
    query: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let period = period_of(state, query)?;
    let org = principal.organization().id;
    let app_only = match principal.scope() {
        Scope::App { app, .. } => Some(app),
        Scope::Organization(_) => None,
    };
    const SHOWN: [Dimension; 4] = [
        Dimension::Total,
        Dimension::Model,
        Dimension::Key,
        Dimension::App,
    ];
    let rows = rows_of(state, org, period, &SHOWN, None).await?;
    let (keys, apps) = state
        .store
        .read_blocking(move |txn| {
            Ok::<_, ApiError>((
                list_keys_of_org(txn, org)?,
                crate::store::apps::list_apps_of_org(txn, org)?,
            ))
        })
        .await?;
    let app_name = |id: &str| {
        apps.iter()
            .find(|a| a.id.to_string() == id)
            .map(|a| a.name.clone())
    };
    let key_name = |id: &str| {
        keys.iter()
            .find(|k| k.id.to_string() == id)
            .map(|k| k.name.clone())
    };
    // An app's key: its app's rows stand for the totals and the days.
    let (total_dimension, total_name) = match app_only {
        Some(app) => (Dimension::App, app.to_string()),
        None => (Dimension::Total, String::new()),
    };
    let mut totals = UsageTotals::default();
    let mut daily: BTreeMap<i64, UsageTotals> = (period.first_day()..=period.last_day())
        .map(|d| (d, UsageTotals::default()))
        .collect();
    let mut by_model: BTreeMap<String, UsageTotals> = BTreeMap::new();
    let mut by_key: BTreeMap<String, UsageTotals> = BTreeMap::new();
    let mut by_app: BTreeMap<String, UsageTotals> = BTreeMap::new();
    for (key, row) in &rows {
        match key.dimension {
            d if d == total_dimension && key.name == total_name => {
                totals.add(row);
                daily.entry(key.day).or_default().add(row);
                if d != Dimension::App {
                    continue;
                }
                by_app.entry(key.name.clone()).or_default().add(row);
            }
            Dimension::Model if app_only.is_none() => {
                by_model.entry(key.name.clone()).or_default().add(row);
            }
            Dimension::Key => {
                let keep = match app_only {
                    None => true,
                    Some(app) => keys
                        .iter()
                        .any(|k| k.id.to_string() == key.name && k.app_id == Some(app)),
                };
                if keep {
                    by_key.entry(key.name.clone()).or_default().add(row);
                }
            }
            Dimension::App if app_only.is_none() => {
                by_app.entry(key.name.clone()).or_default().add(row);
            }
            _ => {}
        }
    }
    let money = |micros: i64| Value::String(format_dollars(micros));
    Ok(json_body(
        StatusCode::OK,
        &json!({
            "period": period.text(),
            "totals": {
                "requests": totals.requests,
                "cost": money(totals.cost_micros),
                "cost_micros": totals.cost_micros,
                "inputTokens": totals.input_tokens,
                "outputTokens": totals.output_tokens,
            },
            "daily": daily.iter().map(|(day, t)| json!({
                "date": date_text(*day),
                "requests": t.requests,
                "cost": money(t.cost_micros),
                "cost_micros": t.cost_micros,
            })).collect::<Vec<_>>(),
            "byModel": by_model.iter().map(|(model, t)| json!({
                "model": model,
                "requests": t.requests,
                "cost": money(t.cost_micros),
                "cost_micros": t.cost_micros,
                "inputTokens": t.input_tokens,
                "outputTokens": t.output_tokens,
            })).collect::<Vec<_>>(),
            "byKey": by_key.iter().map(|(id, t)| json!({
                "keyId": id,
                "name": key_name(id),
                "requests": t.requests,
                "cost": money(t.cost_micros),
                "cost_micros": t.cost_micros,
            })).collect::<Vec<_>>(),
            "byApp": by_app.iter().map(|(id, t)| json!({
                "appId": id,
                "name": app_name(id),
                "requests": t.requests,
                "cost": money(t.cost_micros),
                "cost_micros": t.cost_micros,
            })).collect::<Vec<_>>(),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn periods() {
        let p = Period::parse("2026-02").unwrap();
        assert_eq!(p.text(), "2026-02");
        assert_eq!(p.last_day() - p.first_day() + 1, 28);
        assert_eq!(
            Period::parse("2024-02").unwrap().last_day()
                - Period::parse("2024-02").unwrap().first_day()
                + 1,
            29
        );
        let dec = Period::parse("2026-12").unwrap();
        assert_eq!(date_text(dec.last_day()), "2026-12-31");
        for bad in [
            "2026-13", "2026-00", "26-01", "2026-1", "2026/01", "+026-01", "1969-12", "",
        ] {
            assert_eq!(Period::parse(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn a_period_round_trips(year in 1970i64..9999, month in 1u32..=12) {
            let p = Period { year, month };
            prop_assert_eq!(Period::parse(&p.text()), Some(p));
            prop_assert_eq!(Period::of_day(p.first_day()), p);
            prop_assert_eq!(Period::of_day(p.last_day()), p);
        }

        #[test]
        fn any_text_parses_or_not_without_panic(text in "\\PC{0,12}") {
            let _ = Period::parse(&text);
        }
    }
}
