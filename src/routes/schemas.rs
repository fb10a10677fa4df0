//! OpenAPI schemas for the JSON whose Rust type carries none: the WebAuthn
//! dictionaries webauthn-rs (de)serialises, and the payment transaction.
//! They mirror what the server reads and writes, so that `/openapi.json`
//! lets a client (or the fuzzer in `.ci/run`) build a body that gets past
//! parsing to the verifier, and so that a response that drifts from them
//! fails schemathesis's schema check.

use std::borrow::Cow;

use serde_json::{Value, json};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

/// Declares a schema-only type whose schema is JSON Schema text, which
/// reads closer to the WebAuthn specification than builder calls would.
macro_rules! json_schema {
    ($(#[$doc:meta])* $ty:ident = $name:literal, $schema:expr) => {
        $(#[$doc])*
        pub struct $ty;

        impl PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                from_json($schema)
            }
        }

        impl ToSchema for $ty {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
        }
    };
}

/// A schema that does not read as OpenAPI comes out empty, which the test
/// below refuses.
fn from_json(schema: Value) -> RefOr<Schema> {
    serde_json::from_value(schema)
        .unwrap_or_else(|_| RefOr::T(Schema::Object(utoipa::openapi::Object::new())))
}

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// What webauthn-rs decodes: base64url without padding, and also padded or
/// standard base64. The pattern names the form clients should send.
fn base64url(description: &str) -> Value {
    json!({ "type": "string", "pattern": "^[A-Za-z0-9_-]*$", "description": description })
}

/// A started ceremony: the handle to finish it with, and the options for
/// the platform API.
fn started(options: &str) -> Value {
    json!({
        "type": "object",
        "required": ["ceremony_id", "publicKey"],
        "properties": {
            "ceremony_id": { "type": "string" },
            "publicKey": reference(options),
        },
    })
}

/// `PublicKeyCredential.toJSON()`: what a registration and an assertion
/// share, around their own `response` and `clientExtensionResults`.
fn public_key_credential(response: Value, extension_results: Value) -> Value {
    json!({
        "type": "object",
        "required": ["id", "rawId", "type", "response"],
        "properties": {
            "id": { "type": "string", "description": "the credential id, base64url" },
            "rawId": base64url("the credential id"),
            "type": { "type": "string", "example": "public-key" },
            "authenticatorAttachment": { "type": ["string", "null"], "example": "platform" },
            "response": response,
            "clientExtensionResults": extension_results,
        },
    })
}

fn credential_descriptor() -> Value {
    json!({
        "type": "object",
        "required": ["type", "id"],
        "properties": {
            "type": { "type": "string", "example": "public-key" },
            "id": base64url("the credential id"),
            "transports": { "type": "array", "items": { "type": "string" } },
        },
    })
}

json_schema!(
    /// `PublicKeyCredential.toJSON()` of a new credential (WebAuthn Level 3
    /// `RegistrationResponseJSON`). Only `response.attestationObject` and
    /// `response.clientDataJSON` are verified; the credential id is read
    /// from the attestation, not from `id` or `rawId`.
    RegistrationResponseJson = "RegistrationResponseJSON",
    public_key_credential(
            json!({
                "type": "object",
                "required": ["attestationObject", "clientDataJSON"],
                "properties": {
                    "attestationObject": base64url("CBOR attestation object"),
                    "clientDataJSON": base64url("the client data, JSON"),
                    "transports": {
                        "type": ["array", "null"],
                        "items": { "type": "string", "example": "internal" },
                    },
                },
            }),
            json!({
                "type": "object",
                "properties": {
                    "appid": { "type": "boolean" },
                    "credProps": {
                        "type": "object",
                        "properties": { "rk": { "type": "boolean" } },
                    },
                    "hmacSecret": { "type": "boolean" },
                    "minPinLength": { "type": "integer", "minimum": 0, "maximum": 4294967295u64 },
                },
            }),
    )
);

json_schema!(
    /// `PublicKeyCredential.toJSON()` of an assertion (WebAuthn Level 3
    /// `AuthenticationResponseJSON`).
    AuthenticationResponseJson = "AuthenticationResponseJSON",
    public_key_credential(
            json!({
                "type": "object",
                "required": ["authenticatorData", "clientDataJSON", "signature"],
                "properties": {
                    "authenticatorData": base64url("authenticator data"),
                    "clientDataJSON": base64url("the client data, JSON"),
                    "signature": base64url("the assertion signature"),
                    "userHandle": {
                        "anyOf": [base64url("the user handle"), { "type": "null" }],
                    },
                },
            }),
            json!({
                "type": "object",
                "properties": { "appid": { "type": "boolean" } },
            }),
    )
);

json_schema!(
    /// WebAuthn Level 3 `PublicKeyCredentialCreationOptionsJSON`, for
    /// `navigator.credentials.create({publicKey})` after decoding the
    /// base64url members (or `PublicKeyCredential.parseCreationOptionsFromJSON`).
    CreationOptionsJson = "PublicKeyCredentialCreationOptionsJSON",
    json!({
        "type": "object",
        "required": ["rp", "user", "challenge", "pubKeyCredParams"],
        "properties": {
            "rp": {
                "type": "object",
                "required": ["id", "name"],
                "properties": { "id": { "type": "string" }, "name": { "type": "string" } },
            },
            "user": {
                "type": "object",
                "required": ["id", "name", "displayName"],
                "properties": {
                    "id": base64url("the user handle: random, not the username"),
                    "name": { "type": "string" },
                    "displayName": { "type": "string" },
                },
            },
            "challenge": base64url("the challenge"),
            "pubKeyCredParams": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["type", "alg"],
                    "properties": {
                        "type": { "type": "string", "example": "public-key" },
                        "alg": { "type": "integer", "example": -7 },
                    },
                },
            },
            "timeout": { "type": "integer", "minimum": 0 },
            "excludeCredentials": { "type": "array", "items": credential_descriptor() },
            "authenticatorSelection": {
                "type": "object",
                "properties": {
                    "authenticatorAttachment": { "type": "string" },
                    "residentKey": { "type": "string" },
                    "requireResidentKey": { "type": "boolean" },
                    "userVerification": { "type": "string" },
                },
            },
            "hints": { "type": "array", "items": { "type": "string" } },
            "attestation": { "type": "string" },
            "attestationFormats": { "type": "array", "items": { "type": "string" } },
            "extensions": { "type": "object" },
        },
    })
);

json_schema!(
    /// WebAuthn Level 3 `PublicKeyCredentialRequestOptionsJSON`, for
    /// `navigator.credentials.get({publicKey})`.
    RequestOptionsJson = "PublicKeyCredentialRequestOptionsJSON",
    json!({
        "type": "object",
        "required": ["challenge", "rpId", "allowCredentials", "userVerification"],
        "properties": {
            "challenge": base64url("the challenge"),
            "timeout": { "type": "integer", "minimum": 0 },
            "rpId": { "type": "string" },
            "allowCredentials": {
                "type": "array",
                "description": "empty for a discoverable (username-less) sign-in",
                "items": credential_descriptor(),
            },
            "userVerification": { "type": "string", "example": "required" },
            "hints": { "type": "array", "items": { "type": "string" } },
            "extensions": { "type": "object" },
        },
    })
);

json_schema!(
    /// A started registration: the handle to finish it with, and the
    /// options for the platform API.
    RegistrationStarted = "RegistrationStarted",
    started("PublicKeyCredentialCreationOptionsJSON")
);

json_schema!(
    /// A started sign-in or payment approval: the handle to finish it
    /// with, and the options for the platform API.
    AssertionStarted = "AssertionStarted",
    started("PublicKeyCredentialRequestOptionsJSON")
);

json_schema!(
    /// The payment a step-up approves; its canonical JSON (members sorted,
    /// no white space) is hashed into the challenge.
    TransactionJson = "Transaction",
    json!({
        "type": "object",
        "required": ["amount", "currency", "payee"],
        "properties": {
            "amount": {
                "type": "string",
                "pattern": "^(0|[1-9][0-9]*)(\\.[0-9]{1,3})?$",
                "description": "a positive decimal, at most 3 decimals",
                "example": "12.50",
            },
            "currency": { "type": "string", "pattern": "^[A-Z]{3}$", "example": "EUR" },
            "payee": { "type": "string", "minLength": 1, "maxLength": 140 },
            "reference": { "type": ["string", "null"], "minLength": 1, "maxLength": 140 },
        },
    })
);

json_schema!(
    /// A username as sent: trimmed and lower-cased by the server.
    UsernameText = "Username",
    json!({
        "type": "string",
        "pattern": "^\\s*[A-Za-z0-9._@+-]{3,64}\\s*$",
        "example": "alice",
    })
);

json_schema!(
    /// A one-time code as typed: a TOTP or mailed code (6 digits), a
    /// recovery or enrolment code; spaces and dashes are ignored.
    CodeText = "OneTimeCode",
    json!({ "type": "string", "pattern": "^[A-Za-z0-9 -]*[A-Za-z0-9][A-Za-z0-9 -]*$", "example": "123456" })
);

json_schema!(
    /// A name shown to people (a device, a display name): trimmed, 1 to 64
    /// characters, no control characters.
    LabelText = "Label",
    json!({ "type": "string", "minLength": 1, "maxLength": 64, "example": "Work laptop" })
);

json_schema!(
    /// A refresh or MFA token: 32 random bytes, base64url.
    TokenText = "OpaqueToken",
    json!({ "type": "string", "pattern": "^[A-Za-z0-9_-]{43}$" })
);

json_schema!(
    /// `GET /healthz` and `GET /readyz` when they succeed.
    HealthJson = "Health",
    json!({
        "type": "object",
        "required": ["status"],
        "properties": { "status": { "type": "string", "enum": ["ok", "ready"] } },
    })
);

json_schema!(
    /// One public signing key (RFC 7517; RFC 8037 for Ed25519).
    JwkJson = "Jwk",
    json!({
        "type": "object",
        "required": ["kty", "crv", "alg", "use", "kid", "x"],
        "properties": {
            "kty": { "type": "string", "enum": ["EC", "OKP"] },
            "crv": { "type": "string", "enum": ["P-256", "Ed25519"] },
            "alg": { "type": "string", "enum": ["ES256", "EdDSA"] },
            "use": { "type": "string", "enum": ["sig"] },
            "kid": { "type": "string", "description": "the `kid` in the header of the tokens it signs" },
            "x": base64url("the x coordinate (EC) or the public key (OKP)"),
            "y": base64url("the y coordinate (EC only)"),
        },
    })
);

json_schema!(
    /// `GET /.well-known/jwks.json`.
    JwkSetJson = "JwkSet",
    json!({
        "type": "object",
        "required": ["keys"],
        "properties": { "keys": { "type": "array", "items": reference("Jwk") } },
    })
);

json_schema!(
    /// `GET /.well-known/assetlinks.json`: Digital Asset Links statements.
    AssetLinksJson = "AssetLinks",
    json!({
        "type": "array",
        "items": {
            "type": "object",
            "required": ["relation", "target"],
            "properties": {
                "relation": { "type": "array", "items": { "type": "string" } },
                "target": {
                    "type": "object",
                    "required": ["namespace", "package_name", "sha256_cert_fingerprints"],
                    "properties": {
                        "namespace": { "type": "string", "enum": ["android_app"] },
                        "package_name": { "type": "string" },
                        "sha256_cert_fingerprints": {
                            "type": "array",
                            "items": { "type": "string", "pattern": "^([0-9A-F]{2}:){31}[0-9A-F]{2}$" },
                        },
                    },
                },
            },
        },
    })
);

json_schema!(
    /// `GET /.well-known/apple-app-site-association`: the apps that may
    /// use this site's passkeys.
    AppleAppSiteAssociationJson = "AppleAppSiteAssociation",
    json!({
        "type": "object",
        "required": ["webcredentials"],
        "properties": {
            "webcredentials": {
                "type": "object",
                "required": ["apps"],
                "properties": {
                    "apps": {
                        "type": "array",
                        "items": { "type": "string", "example": "ABCDE12345.com.example.wallet" },
                    },
                },
            },
        },
    })
);

json_schema!(
    /// `GET /.well-known/webauthn`: WebAuthn Related Origin Requests.
    RelatedOriginsJson = "RelatedOrigins",
    json!({
        "type": "object",
        "required": ["origins"],
        "properties": {
            "origins": { "type": "array", "items": { "type": "string", "format": "uri" } },
        },
    })
);

json_schema!(
    /// `GET /openapi.json`: an OpenAPI 3.1 document.
    OpenApiJson = "OpenApiDocument",
    json!({
        "type": "object",
        "required": ["openapi", "info", "paths"],
        "properties": {
            "openapi": { "type": "string", "pattern": "^3\\.1\\." },
            "info": { "type": "object" },
            "paths": { "type": "object" },
        },
    })
);

/// Every schema above, for the OpenAPI document's components: the ones
/// referenced only from inside another JSON schema are not collected by
/// utoipa on its own.
pub fn all() -> Vec<(String, RefOr<Schema>)> {
    fn entry<T: ToSchema>() -> (String, RefOr<Schema>) {
        (T::name().into_owned(), T::schema())
    }
    vec![
        entry::<RegistrationResponseJson>(),
        entry::<AuthenticationResponseJson>(),
        entry::<CreationOptionsJson>(),
        entry::<RequestOptionsJson>(),
        entry::<RegistrationStarted>(),
        entry::<AssertionStarted>(),
        entry::<TransactionJson>(),
        entry::<UsernameText>(),
        entry::<CodeText>(),
        entry::<LabelText>(),
        entry::<TokenText>(),
        entry::<HealthJson>(),
        entry::<JwkJson>(),
        entry::<JwkSetJson>(),
        entry::<AssetLinksJson>(),
        entry::<AppleAppSiteAssociationJson>(),
        entry::<RelatedOriginsJson>(),
        entry::<OpenApiJson>(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_reads_as_openapi() {
        for (name, schema) in all() {
            let written = serde_json::to_value(&schema).unwrap();
            assert!(written.get("type").is_some(), "{name} did not read as OpenAPI: {written}");
        }
    }
}
