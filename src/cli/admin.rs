//! Operator commands: `migrate`, `org`, `key`, `tokens`. Each connects to
//! `FACECOMPARE_DATABASE_URL` and applies migrations first, so a fresh
//! database just works. Results go to stdout (one JSON value with `--json`);
//! nothing is logged, and API keys are printed only by `key create`.
use anyhow::Context;
use serde_json::json;

use super::{KeyCommand, OrgCommand, OrgCreateArgs, TokensCommand};
use crate::{
    accounts::{Accounts, NewOrg, Org},
    config::{Config, RateLimit},
};

async fn open(config: &Config) -> anyhow::Result<Accounts> {
    let accounts = Accounts::connect(&config.database_url).await?;
    accounts.migrate().await?;
    Ok(accounts)
}

pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let accounts = Accounts::connect(&config.database_url).await?;
    accounts.migrate().await?;
    println!("migrations applied");
    Ok(())
}

pub async fn org(config: &Config, cmd: OrgCommand) -> anyhow::Result<()> {
    let accounts = open(config).await?;
    match cmd {
        OrgCommand::Create(args) => org_create(&accounts, config, args).await,
        OrgCommand::List { json } => {
            let orgs = accounts.list_orgs().await?;
            if json {
                print_json(&orgs)?;
            } else if orgs.is_empty() {
                println!("no organisations");
            } else {
                println!(
                    "{:<28} {:<24} {:>12}  {:<10} {:<9} s3 prefix",
                    "id", "name", "balance", "rate", "threshold"
                );
                for o in &orgs {
                    let threshold = o
                        .threshold
                        .map(|t| t.to_string())
                        .unwrap_or_else(|| "-".into());
                    println!(
                        "{:<28} {:<24} {:>12}  {:<10} {:<9} {}",
                        o.id, o.name, o.balance, o.rate_limit, threshold, o.s3_prefix
                    );
                }
            }
            Ok(())
        }
        OrgCommand::Show { org, json } => {
            let org = accounts.find_org(&org).await?;
            if json {
                print_json(&org)?;
            } else {
                print_org(&org);
            }
            Ok(())
        }
    }
}

async fn org_create(
    accounts: &Accounts,
    config: &Config,
    args: OrgCreateArgs,
) -> anyhow::Result<()> {
    let rate_limit = match &args.rate_limit {
        Some(text) => RateLimit::parse(text).context("--rate-limit")?,
        None => config.rate_limit,
    };
    let org = accounts
        .create_org(NewOrg {
            name: args.name,
            tokens: args.tokens,
            s3_prefix: args.s3_prefix,
            rate_limit,
            threshold: args.threshold,
        })
        .await?;
    if args.json {
        print_json(&org)?;
    } else {
        println!("created organisation");
        print_org(&org);
        println!("next: facecompare key create --org {}", org.name);
    }
    Ok(())
}

pub async fn key(config: &Config, cmd: KeyCommand) -> anyhow::Result<()> {
    let accounts = open(config).await?;
    match cmd {
        KeyCommand::Create {
            org,
            aws: true,
            json,
        } => {
            // The signing key first: no access key is issued that could not verify.
            let keys = accounts
                .signing_keys_or_generate(&config.aws_signing)
                .await?;
            let key = accounts.create_aws_key(&org).await?;
            let secret = keys.secret_for(&key.id);
            if json {
                print_json(&json!({
                    "id": key.id,
                    "org": key.org,
                    "kind": "aws",
                    "accessKeyId": key.id,
                    "secretAccessKey": secret,
                }))?;
            } else {
                println!("access key id:     {}", key.id);
                println!("org:               {}", key.org);
                println!("secret access key: {secret}");
                println!(
                    "Store the secret now: it is not stored and is shown only this once.\n\
                     Use them as AWS credentials with endpoint_url set to this server."
                );
            }
            Ok(())
        }
        KeyCommand::Create { org, json, .. } => {
            let key = accounts.create_key(&org).await?;
            if json {
                print_json(&key)?;
            } else {
                println!("key id: {}", key.id);
                println!("org:    {}", key.org);
                println!("key:    {}", key.key);
                println!(
                    "Store this key now: it is kept only as a hash and cannot be shown again."
                );
            }
            Ok(())
        }
        KeyCommand::List { org, json } => {
            let org = accounts.find_org(&org).await?;
            let keys = accounts.list_keys(&org.id).await?;
            if json {
                print_json(&keys)?;
            } else if keys.is_empty() {
                println!("no keys for {}", org.name);
            } else {
                for k in &keys {
                    let state = if k.revoked { "revoked" } else { "active" };
                    println!(
                        "{:<28}  {:<3}  {state:<7}  created {}",
                        k.id,
                        k.kind,
                        utc_text(k.created_at_ms)
                    );
                }
            }
            Ok(())
        }
        KeyCommand::Revoke { key_id } => {
            accounts.revoke_key(&key_id).await?;
            println!("revoked {key_id}");
            Ok(())
        }
    }
}

pub async fn tokens(config: &Config, cmd: TokensCommand) -> anyhow::Result<()> {
    let accounts = open(config).await?;
    match cmd {
        TokensCommand::Add {
            org,
            amount,
            reason,
            json,
        } => {
            let org = accounts.find_org(&org).await?;
            let balance = accounts.add_tokens(&org.id, amount, &reason).await?;
            if json {
                print_json(&json!({ "org": org.id, "name": org.name, "balance": balance }))?;
            } else {
                println!("{}: balance {balance}", org.name);
            }
            Ok(())
        }
    }
}

fn print_org(org: &Org) {
    println!("id:         {}", org.id);
    println!("name:       {}", org.name);
    println!("balance:    {}", org.balance);
    println!("s3 prefix:  {}", org.s3_prefix);
    println!("rate limit: {}", org.rate_limit);
    match org.threshold {
        Some(t) => println!("threshold:  {t}"),
        None => println!("threshold:  server default"),
    }
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS UTC` (civil-from-days, no date crate needed).
fn utc_text(ms: i64) -> String {
    let t = crate::utc::DateTime::from_unix(ms.div_euclid(1000));
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

fn print_json<T: serde::Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_utc_times() {
        assert_eq!(super::utc_text(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::utc_text(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(
            super::utc_text(1_700_000_000_123),
            "2023-11-14 22:13:20 UTC"
        );
    }
}
