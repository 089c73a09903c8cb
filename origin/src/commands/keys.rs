//! `cascade token-key`: the visitor-token key derived from the deployment's secret, for the site's
//! login service, which mints visitor tokens and must not hold the master secret (that would let it
//! sign requests to the origin as the edge).

use std::path::PathBuf;

use cascade_shared::signing::Keys;
use serde::Serialize;

use crate::config::Config;

/// Print the visitor-token key (hex) derived from `CASCADE_SECRET`.
#[derive(Debug, Clone, clap::Args)]
pub struct TokenKeyArgs {
    /// TOML config file (also $CASCADE_CONFIG); environment variables override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// The derived key.
#[derive(Debug, Serialize)]
pub struct TokenKey {
    /// HMAC-SHA256 key of visitor tokens, hex (decode it to 32 bytes before use).
    pub visitor_token_key_hex: String,
}

/// Derives the key from the configured secret.
pub fn run(args: TokenKeyArgs) -> anyhow::Result<TokenKey> {
    let config = Config::load(args.config.as_deref(), &|name| std::env::var(name).ok())?;
    let secret =
        config.secret.ok_or_else(|| anyhow::anyhow!("CASCADE_SECRET is not set (nor `secret` in the config file)"))?;
    let key = hex::encode(Keys::derive(secret.as_bytes()).visitor_tokens);
    eprintln!(
        "visitor-token key (HKDF-SHA256 of CASCADE_SECRET, info \"visitor-token\"); give it to the login service"
    );
    Ok(TokenKey { visitor_token_key_hex: key })
}
