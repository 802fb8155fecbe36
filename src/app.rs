//! The application core: what every transport shares, built once at start.
//!
//! [`App`] holds the configuration, the accounts database, the face engine,
//! the S3 store, the metrics and the AWS signing keys. It sits below the
//! transports (`http`, and through it the Rekognition protocol) and above the
//! domain folders (`faces`, `inputs`, `accounts`); nothing here knows HTTP.
//!
//! Start-up runs in two steps so that the transport can bind its ports in
//! between: [`App::load`] (models, S3 settings, signing keys: nothing written
//! yet) and [`Loaded::open`] (database, migrations, the embedded default org,
//! whose one-time key is printed only once everything else has worked).
use std::{io::Write as _, sync::OnceLock};

use anyhow::Context;

use crate::{
    accounts::{Accounts, SigningKeys},
    config::Config,
    faces::{Engine, EngineConfig},
    inputs::s3::S3Store,
    telemetry::Metrics,
};

/// Everything an operation needs, whatever transport carried the request.
pub struct App {
    pub config: Config,
    pub accounts: Accounts,
    pub engine: Engine,
    pub s3: Option<S3Store>,
    pub metrics: Metrics,
    /// The AWS signing keys, once loaded ([`App::signing_keys`]).
    aws_signing: OnceLock<SigningKeys>,
}

/// The first half of the start: everything but the database.
pub struct Loaded {
    config: Config,
    engine: Engine,
    s3: Option<S3Store>,
    aws_signing: OnceLock<SigningKeys>,
}

impl App {
    /// Loads the models, the S3 settings and the configured signing keys:
    /// a server that cannot start fails here, before it writes anything.
    pub async fn load(config: Config) -> anyhow::Result<Loaded> {
        // The licence gate reads the manifest only: a refused pack's models are never loaded.
        crate::faces::pack::Pack::read_manifest(&config.models_dir, &config.pack)
            .and_then(|m| m.licence_gate(config.pack_licence_ack.as_deref()))
            .context("loading the face models")?;
        let engine_config = EngineConfig::from_config(&config);
        let engine = tokio::task::spawn_blocking(move || Engine::start(engine_config))
            .await
            .context("starting the face engine")?
            .context("loading the face models")?;
        let pack = engine.pack_info();
        tracing::info!(
            pack = %pack.name,
            embedder_sha256 = %pack.embedder_sha256,
            licence = %pack.licence,
            commercial = pack.commercial.as_str(),
            "model pack loaded"
        );
        let s3 = config
            .s3
            .as_ref()
            .map(S3Store::connect)
            .transpose()
            .context("S3 configuration")?;

        // A configured key that cannot be used fails the start; a key file that
        // does not exist yet is looked for again on the first signed request.
        let aws_signing = OnceLock::new();
        if let Some(keys) = SigningKeys::load(&config.aws_signing, false)
            .context("FACECOMPARE_AWS_SIGNING_KEY(_FILE)")?
        {
            let _ = aws_signing.set(keys);
        }
        Ok(Loaded {
            config,
            engine,
            s3,
            aws_signing,
        })
    }

    /// The deadline of a request that starts now.
    pub fn deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.config.request_timeout
    }

    /// The server signing keys, loaded on first use and kept: `key create --aws`
    /// may create the key file after the server started. `Ok(None)`: no key yet,
    /// so no access key can have been issued against it.
    pub fn signing_keys(&self) -> anyhow::Result<Option<SigningKeys>> {
        if let Some(k) = self.aws_signing.get() {
            return Ok(Some(k.clone()));
        }
        Ok(SigningKeys::load(&self.config.aws_signing, false)?
            .map(|keys| self.aws_signing.get_or_init(|| keys).clone()))
    }
}

impl Loaded {
    /// Connects and migrates the database and, for the embedded default,
    /// creates the `default` org and prints its key (once, on stdout only:
    /// logs never carry keys).
    pub async fn open(self) -> anyhow::Result<App> {
        let Loaded {
            config,
            engine,
            s3,
            aws_signing,
        } = self;
        let accounts = Accounts::connect(&config.database_url)
            .await
            .context("connecting to the database")?;
        accounts
            .migrate()
            .await
            .context("applying database migrations")?;
        if aws_signing.get().is_none() {
            // Generated now (in the data directory, a volume in compose) so that
            // every process that shares the directory derives the same secrets.
            match accounts.signing_keys_or_generate(&config.aws_signing).await {
                Ok(keys) => {
                    tracing::info!(file = %config.aws_signing.file.display(), "AWS signing key ready");
                    let _ = aws_signing.set(keys);
                }
                Err(e) => tracing::error!(
                    error = %format!("{e:#}"),
                    "no AWS signing key: Rekognition requests are refused until one is configured"
                ),
            }
        }
        if config.embedded_default
            && let Some(created) = accounts
                .ensure_default_org(config.default_org_tokens, config.rate_limit)
                .await
                .context("creating the default organisation")?
        {
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "\n================================================================\n\
                 Created organisation `default` with {} tokens.\n\
                 Its API key (shown only this once; store it now):\n\n    {}\n\n\
                 Use it as:  curl -H 'x-api-key: {}' ...\n\
                 ================================================================\n",
                config.default_org_tokens, created.key, created.key
            )?;
            out.flush()?;
        }
        let metrics = Metrics::new();
        let pack = engine.pack_info();
        metrics.set_pack(crate::telemetry::PackLabels {
            pack: pack.name.clone(),
            embedder_sha256: pack.embedder_sha256.clone(),
            licence: pack.licence.clone(),
            commercial: pack.commercial.as_str().into(),
        });
        Ok(App {
            config,
            accounts,
            engine,
            s3,
            metrics,
            aws_signing,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }
}
