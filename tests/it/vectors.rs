//! Conformance vectors (copied from `../shared/vectors/` into `tests/vectors/` with their
//! READMEs and licence notes): EIP-191, EIP-55, EIP-712 and Wycheproof secp256k1 / Ed25519.

use std::path::PathBuf;

use k256::ecdsa::SigningKey;
use serde_json::Value;

use eliza_cloud::crypto::eth::{
    Address, AddressError, SignatureError, eip191_hash, eip712, parse_signature_hex,
    recover_eip191_signer, recover_signer, verify_der_prehash_low_s,
};
use eliza_cloud::crypto::solana::verify_ed25519_strict;
use eliza_cloud::crypto::{from_hex, from_hex_exact, to_hex};

fn vectors(path: &str) -> Value {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(path);
    serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap()
}

fn hex32(v: &Value) -> [u8; 32] {
    from_hex_exact::<32>(v.as_str().unwrap()).unwrap()
}

#[test]
fn eip191_personal_sign() {
    let file = vectors("ethereum/eip191_personal_sign.json");
    let cases = file["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 5);
    for case in cases {
        let message = from_hex(case["message_hex"].as_str().unwrap()).unwrap();
        if let Some(text) = case["message_utf8"].as_str() {
            assert_eq!(message, text.as_bytes());
        }
        if let Some(digest) = case.get("digest") {
            assert_eq!(eip191_hash(&message), hex32(digest));
        }
        let signature = parse_signature_hex(case["signature"].as_str().unwrap()).unwrap();
        let expected = Address::parse_any_case(case["address"].as_str().unwrap()).unwrap();
        assert_eq!(
            recover_eip191_signer(&message, &signature),
            Ok(expected),
            "{}",
            case["label"]
        );
        if let Some(key) = case.get("private_key") {
            let key = SigningKey::from_slice(&hex32(key)).unwrap();
            assert_eq!(Address::of_key(key.verifying_key()), expected);
        }
        // One changed byte of the message recovers someone else.
        let mut other = message.clone();
        other.push(b'!');
        assert_ne!(recover_eip191_signer(&other, &signature), Ok(expected));
    }
}

#[test]
fn eip55_checksums() {
    let file = vectors("ethereum/eip55_checksum.json");
    for valid in file["valid"].as_array().unwrap() {
        let text = valid.as_str().unwrap();
        let address = Address::parse_checksummed(text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
        assert_eq!(address.to_checksum(), text);
    }
    for invalid in file["invalid"].as_array().unwrap() {
        let text = invalid.as_str().unwrap();
        assert_eq!(
            Address::parse_checksummed(text),
            Err(AddressError::Checksum),
            "{text}"
        );
        assert!(Address::parse_any_case(text).is_ok());
    }
    for malformed in [
        "",
        "0x",
        "52908400098527886E0F7030069857D2E4169EE7",
        "0x5290840009852788",
        "0xZZ908400098527886E0F7030069857D2E4169EE7",
    ] {
        assert_eq!(
            Address::parse_checksummed(malformed),
            Err(AddressError::Format),
            "{malformed}"
        );
    }
}

#[test]
fn eip712_mail_example_and_its_malleated_twin() {
    let v = vectors("ethereum/eip712_mail_example.json");
    let typed = &v["typed_data"];
    let address = |s: &Value| Address::parse_any_case(s.as_str().unwrap()).unwrap();
    let person_type = eip712::type_hash("Person(string name,address wallet)");
    let person = |p: &Value| {
        eip712::hash_struct(
            &person_type,
            &[
                eip712::word_of_bytes(p["name"].as_str().unwrap().as_bytes()),
                eip712::word_of_address(&address(&p["wallet"])),
            ],
        )
    };
    let mail_type = eip712::type_hash(v["encodeType_Mail"].as_str().unwrap());
    assert_eq!(mail_type, hex32(&v["typeHash_Mail"]));
    let message = &typed["message"];
    assert_eq!(person(&message["from"]), hex32(&v["hashStruct_Person_Cow"]));
    let mail = eip712::hash_struct(
        &mail_type,
        &[
            person(&message["from"]),
            person(&message["to"]),
            eip712::word_of_bytes(message["contents"].as_str().unwrap().as_bytes()),
        ],
    );
    assert_eq!(mail, hex32(&v["hashStruct_Mail"]));
    let domain = eip712::Domain {
        name: typed["domain"]["name"].as_str().unwrap().into(),
        version: typed["domain"]["version"].as_str().unwrap().into(),
        chain_id: typed["domain"]["chainId"].as_u64().unwrap(),
        verifying_contract: address(&typed["domain"]["verifyingContract"]),
    };
    assert_eq!(domain.separator(), hex32(&v["domainSeparator"]));
    let digest = eip712::digest(&domain.separator(), &mail);
    assert_eq!(digest, hex32(&v["digest"]));
    let signer = address(&v["signer"]);
    let signature = parse_signature_hex(v["signature"]["rsv_hex"].as_str().unwrap()).unwrap();
    assert_eq!(recover_signer(&digest, &signature), Ok(signer));
    let key = SigningKey::from_slice(&hex32(&v["private_key"])).unwrap();
    assert_eq!(Address::of_key(key.verifying_key()), signer);
    // Same r, s' = n - s, v flipped: plain ecrecover accepts it; the low-S rule must not.
    let twin =
        parse_signature_hex(v["malleated_high_s_signature"]["rsv_hex"].as_str().unwrap()).unwrap();
    assert_eq!(recover_signer(&digest, &twin), Err(SignatureError::HighS));
}

#[test]
fn wycheproof_secp256k1_bitcoin_low_s() {
    use sha2::{Digest, Sha256};
    let file = vectors("wycheproof/ecdsa_secp256k1_sha256_bitcoin_test.json");
    let (mut valid, mut invalid) = (0, 0);
    for group in file["testGroups"].as_array().unwrap() {
        let key = from_hex(group["publicKey"]["uncompressed"].as_str().unwrap()).unwrap();
        for case in group["tests"].as_array().unwrap() {
            let msg = from_hex(case["msg"].as_str().unwrap()).unwrap();
            let sig = from_hex(case["sig"].as_str().unwrap()).unwrap();
            let digest = Sha256::digest(&msg);
            let result = verify_der_prehash_low_s(&key, &digest, &sig);
            match case["result"].as_str().unwrap() {
                "valid" => {
                    assert_eq!(result, Ok(()), "tcId {} {}", case["tcId"], case["comment"]);
                    valid += 1;
                }
                _ => {
                    assert!(
                        result.is_err(),
                        "tcId {} {} accepted",
                        case["tcId"],
                        case["comment"]
                    );
                    invalid += 1;
                }
            }
        }
    }
    assert_eq!((valid, invalid), (162, 301));
}

#[test]
fn wycheproof_ed25519_strict() {
    let file = vectors("wycheproof/ed25519_test.json");
    let (mut valid, mut invalid) = (0, 0);
    for group in file["testGroups"].as_array().unwrap() {
        let key = from_hex_exact::<32>(group["publicKey"]["pk"].as_str().unwrap()).unwrap();
        for case in group["tests"].as_array().unwrap() {
            let msg = from_hex(case["msg"].as_str().unwrap()).unwrap();
            let sig = from_hex(case["sig"].as_str().unwrap()).unwrap();
            let result = match <[u8; 64]>::try_from(sig.as_slice()) {
                Ok(sig) => verify_ed25519_strict(&key, &msg, &sig).is_ok(),
                Err(_) => false,
            };
            match case["result"].as_str().unwrap() {
                "valid" => {
                    assert!(result, "tcId {} {}", case["tcId"], case["comment"]);
                    valid += 1;
                }
                _ => {
                    assert!(
                        !result,
                        "tcId {} {} accepted",
                        case["tcId"], case["comment"]
                    );
                    invalid += 1;
                }
            }
        }
    }
    assert_eq!((valid, invalid), (88, 63));
}

#[test]
fn signing_in_tests_round_trips_through_recovery() {
    // The tests of later features sign with keys they generate: check that path once here.
    let key = SigningKey::from_slice(&[0x42; 32]).unwrap();
    let hash = eip191_hash(b"eliza");
    let (sig, recid) = key.sign_prehash_recoverable(&hash);
    let mut rsv = [0u8; 65];
    rsv[..64].copy_from_slice(&sig.to_bytes());
    rsv[64] = 27 + recid.to_byte();
    let normalized_ok = eliza_cloud::crypto::eth::is_low_s(&rsv[32..64].try_into().unwrap());
    assert!(normalized_ok, "k256 signs low-S");
    assert_eq!(
        recover_signer(&hash, &rsv),
        Ok(Address::of_key(key.verifying_key()))
    );
    assert_eq!(to_hex(&hash).len(), 64);
}

mod siwe {
    use super::*;
    use eliza_cloud::auth::siwe::{MessageTime, SiweMessage};
    use eliza_cloud::time::{Clock, SystemClock, parse_rfc3339};

    /// Builds a message from a fixture's `fields`, or `None` when a field cannot even be held
    /// (missing, wrong type, unparsable address or time): construction fails either way.
    fn from_fields(f: &Value) -> Option<SiweMessage> {
        let text = |name: &str| f.get(name).and_then(Value::as_str).map(str::to_string);
        let time = |name: &str| -> Option<Option<MessageTime>> {
            match f.get(name) {
                None | Some(Value::Null) => Some(None),
                Some(v) => MessageTime::parse(v.as_str()?).map(Some),
            }
        };
        Some(SiweMessage {
            scheme: text("scheme"),
            domain: text("domain")?,
            address: Address::parse_any_case(&text("address")?).ok()?,
            statement: text("statement"),
            uri: text("uri")?,
            version: text("version")?,
            chain_id: f.get("chainId")?.as_u64()?,
            nonce: text("nonce")?,
            issued_at: MessageTime::parse(&text("issuedAt")?)?,
            expiration_time: time("expirationTime")?,
            not_before: time("notBefore")?,
            request_id: text("requestId"),
            resources: f
                .get("resources")
                .and_then(Value::as_array)
                .map(|r| {
                    r.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    #[test]
    fn parsing_positive() {
        let file = vectors("siwe/parsing_positive.json");
        let cases = file.as_object().unwrap();
        assert_eq!(cases.len(), 19);
        for (name, case) in cases {
            let text = case["message"].as_str().unwrap();
            let parsed = SiweMessage::parse(text).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            let expected = from_fields(&case["fields"]).unwrap();
            assert_eq!(parsed, expected, "{name}");
            assert_eq!(
                parsed.print_unchecked(),
                text,
                "{name}: printing gives the same bytes"
            );
            // The address in the message is exactly its EIP-55 form.
            assert_eq!(
                parsed.address.to_checksum(),
                case["fields"]["address"].as_str().unwrap()
            );
        }
    }

    #[test]
    fn parsing_negative() {
        let file = vectors("siwe/parsing_negative.json");
        let cases = file.as_object().unwrap();
        assert_eq!(cases.len(), 29);
        for (name, text) in cases {
            let parsed = SiweMessage::parse(text.as_str().unwrap());
            assert!(parsed.is_err(), "{name} was accepted: {parsed:?}");
        }
    }

    #[test]
    fn parsing_negative_objects() {
        let file = vectors("siwe/parsing_negative_objects.json");
        let cases = file.as_object().unwrap();
        assert_eq!(cases.len(), 18);
        for (name, fields) in cases {
            if let Some(message) = from_fields(fields) {
                // EIP-55 is a property of the text: the object's spelling must be the checksum.
                let address_ok = fields["address"].as_str() == Some(&message.address.to_checksum());
                assert!(
                    !address_ok || message.validate().is_err(),
                    "{name} was accepted"
                );
            }
        }
    }

    /// Verification through the server's own function, `siwe::verify_signed`: chain id, domain
    /// (the fixture's `domainBinding`, else the message's own), URI, the time rules at the
    /// fixture's `time`, then EIP-191 low-S recovery over the exact text, which must give the
    /// message's address. A `matchNonce` fixture says the nonce the server expects is another:
    /// the server's nonce store, holding only what it issued, must not know the message's.
    fn verify(case: &Value) -> Result<(), String> {
        use eliza_cloud::auth::nonce::{NonceChain, NonceKey, Nonces};
        use eliza_cloud::auth::siwe::{Expected, verify_signed};
        let message = from_fields(case).ok_or("unconstructible")?;
        let text = message.print_unchecked();
        let parsed = SiweMessage::parse(&text).map_err(|e| format!("{e:?}"))?;
        let now = match case.get("time").and_then(Value::as_str) {
            Some(t) => parse_rfc3339(t).ok_or("bad time")?,
            None => SystemClock.now(),
        };
        let expected = Expected {
            domain: case
                .get("domainBinding")
                .and_then(Value::as_str)
                .unwrap_or(&parsed.domain),
            https: parsed.scheme.as_deref() != Some("http"),
            uri: &parsed.uri,
            chain_id: parsed.chain_id,
        };
        // The fixtures follow the reference library, which checks Expiration Time and Not Before
        // only ("expired message" is verified at a time before its Issued At). The server adds
        // SPEC §5.1's "Issued At at most 5 minutes ahead"; that rule has its own tests.
        verify_signed(
            &parsed,
            &text,
            case["signature"].as_str().unwrap(),
            &expected,
            now,
            i64::MAX,
        )?;
        if case.get("matchNonce").is_some() {
            let nonces = Nonces::new(NonceKey::new([9; 32]), now.plus_millis(-1));
            let chain = NonceChain::Ethereum(parsed.chain_id);
            let issued = nonces.issue(&chain, &parsed.uri, now);
            assert_ne!(issued, parsed.nonce);
            assert_eq!(nonces.check(&issued, &chain, &parsed.uri, now), Ok(()));
            if nonces
                .check(&parsed.nonce, &chain, &parsed.uri, now)
                .is_err()
            {
                return Err("nonce not issued".into());
            }
        }
        Ok(())
    }

    #[test]
    fn verification_positive() {
        let file = vectors("siwe/verification_positive.json");
        let cases = file.as_object().unwrap();
        assert_eq!(cases.len(), 4);
        for (name, case) in cases {
            assert_eq!(verify(case), Ok(()), "{name}");
        }
    }

    #[test]
    fn verification_negative() {
        let file = vectors("siwe/verification_negative.json");
        let cases = file.as_object().unwrap();
        assert_eq!(cases.len(), 10);
        // Where the fixture names one cause, the server's check must be the one that refuses.
        let causes = [
            ("expired message", "message_expired"),
            ("domain binding", "domain_mismatch"),
            ("custom time", "message_expired"),
            ("custom nonce", "nonce not issued"),
            ("not yet valid", "message_not_yet_valid"),
        ];
        for (name, case) in cases {
            let refused = verify(case).expect_err(name);
            if let Some((_, cause)) = causes.iter().find(|(n, _)| n == name) {
                assert_eq!(refused, *cause, "{name}");
            }
        }
    }

    #[test]
    fn eip1271_contract_wallets_are_refused_offline() {
        let file = vectors("siwe/eip1271.json");
        for (name, case) in file.as_object().unwrap() {
            assert!(verify(case).is_err(), "{name} verified without an RPC");
        }
    }
}

/// The x402 reference examples: the real EIP-3009 signature verifies under the USDC domain of
/// base-sepolia with a clock pinned inside its window, and fails under the wrong domain name.
mod x402 {
    use super::*;
    use eliza_cloud::x402::payload::{PaymentPayload, decode_header};
    use eliza_cloud::x402::verify::{Reason, Requirements, transfer_digest, verify_payment};
    use eliza_cloud::x402::{base_sepolia, builtin_networks};

    fn requirements(network: &eliza_cloud::x402::Network) -> Requirements<'_> {
        Requirements {
            network,
            pay_to: Address::parse_any_case("0x209693Bc6afc0C5328bA36FaF03C514EF312287C").unwrap(),
            amount: 10_000,
            mainnet_allowed: true,
        }
    }

    #[test]
    fn the_reference_payment_verifies_inside_its_window_only() {
        let file = vectors("x402/spec_examples.json");
        let e = &file["eip712"];
        let network = base_sepolia();
        assert_eq!(
            to_hex(&network.domain().separator()),
            e["domain_separator"].as_str().unwrap()[2..]
        );
        let headers = [
            file["v1"]["X-PAYMENT"][0]["header_value"].as_str().unwrap(),
            file["v2"]["PAYMENT-SIGNATURE"][0]["header_value"]
                .as_str()
                .unwrap(),
        ];
        for (i, header) in headers.iter().enumerate() {
            let payment = PaymentPayload::decode(header.as_bytes()).unwrap();
            assert_eq!(payment.version, i as u64 + 1);
            // The decoded JSON is the example's, field for field.
            let decoded = if i == 0 {
                &file["v1"]["X-PAYMENT"][0]["decoded"]
            } else {
                &file["v2"]["PAYMENT-SIGNATURE"][0]["decoded"]
            };
            assert_eq!(&decode_header(header.as_bytes()).unwrap(), decoded);
            assert_eq!(
                to_hex(&transfer_digest(&network, &payment.authorization)),
                e["digest"].as_str().unwrap()[2..]
            );
            // validAfter 1740672089, validBefore 1740672154: inside is [after, before - 6].
            for now in [1_740_672_089, 1_740_672_100, 1_740_672_148] {
                let ok = verify_payment(&payment, &requirements(&network), now).unwrap();
                assert_eq!(
                    ok.payer.to_checksum(),
                    e["expected_signer"].as_str().unwrap()
                );
            }
            assert_eq!(
                verify_payment(&payment, &requirements(&network), 1_740_672_149),
                Err(Reason::ValidBefore)
            );
            assert_eq!(
                verify_payment(&payment, &requirements(&network), 1_740_672_088),
                Err(Reason::ValidAfter)
            );
            assert_eq!(
                verify_payment(&payment, &requirements(&network), 1_800_000_000),
                Err(Reason::ValidBefore)
            );
            // The wrong domain name recovers another address: the signature does not verify.
            let mut wrong = network.clone();
            wrong.token_name = "USD Coin".into();
            assert_eq!(
                to_hex(&transfer_digest(&wrong, &payment.authorization)),
                e["wrong_domain_name_USD_Coin_digest"].as_str().unwrap()[2..]
            );
            assert_eq!(
                verify_payment(&payment, &requirements(&wrong), 1_740_672_100),
                Err(Reason::InvalidSignature)
            );
            // Another price or recipient is refused with its own reason.
            let mut dearer = requirements(&network);
            dearer.amount = 10_001;
            assert_eq!(
                verify_payment(&payment, &dearer, 1_740_672_100),
                Err(Reason::Value)
            );
            let mut elsewhere = requirements(&network);
            elsewhere.pay_to = Address([1; 20]);
            assert_eq!(
                verify_payment(&payment, &elsewhere, 1_740_672_100),
                Err(Reason::RecipientMismatch)
            );
            let base = builtin_networks()
                .into_iter()
                .find(|n| n.name == "base")
                .unwrap();
            assert_eq!(
                verify_payment(&payment, &requirements(&base), 1_740_672_100),
                Err(Reason::InvalidNetwork)
            );
        }
        let base = builtin_networks()
            .into_iter()
            .find(|n| n.name == "base")
            .unwrap();
        assert_eq!(
            to_hex(&base.domain().separator()),
            file["base_mainnet_usdc_domain_separator"]["domain_separator"]
                .as_str()
                .unwrap()[2..]
        );
        // The response examples decode to what they say.
        for version in ["v1", "v2"] {
            let name = if version == "v1" {
                "X-PAYMENT-RESPONSE"
            } else {
                "PAYMENT-RESPONSE"
            };
            for example in file[version][name].as_array().unwrap() {
                let decoded =
                    decode_header(example["header_value"].as_str().unwrap().as_bytes()).unwrap();
                assert_eq!(decoded, example["decoded"]);
            }
        }
    }
}
