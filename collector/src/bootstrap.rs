//! `logferry-collector bootstrap`: the first admin (and optionally the
//! first tenant), made from the command line on a host that can reach
//! ClickHouse. There is no default password: the password is read from
//! standard input, and the command refuses to run once an admin of all
//! tenants exists (from then on, users are managed through the API).

use std::io::BufRead;

use anyhow::Context;

use crate::api::accounts::{new_user_row, tenant_row, NewUser};
use crate::auth::secrets::Secret;
use crate::auth::Role;
use crate::config::Config;
use crate::store::Store;

pub fn command() -> clap::Command {
    use clap::Arg;
    clap::Command::new("bootstrap")
        .about(
            "Create the first admin (password from standard input) and optionally a first tenant",
        )
        .arg(
            Arg::new("username")
                .long("username")
                .required(true)
                .help("The admin's username"),
        )
        .arg(
            Arg::new("tenant")
                .long("tenant")
                .help("Also create this tenant"),
        )
}

pub async fn run(config: Config, args: &clap::ArgMatches) -> anyhow::Result<()> {
    let username: &String = args.get_one("username").expect("required by clap");
    let tenant = args.get_one::<String>("tenant");
    eprintln!("password for `{username}` (one line on standard input, 12 characters or more):");
    let mut password = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut password)
        .context("cannot read the password from standard input")?;
    let password = password.trim_end_matches(['\r', '\n']).to_string();

    let store = Store::open(&config.clickhouse)
        .await
        .with_context(|| format!("cannot open clickhouse at {}", config.clickhouse.url))?;
    if store
        .users()
        .await?
        .iter()
        .any(|u| u.role == Role::Admin.as_str() && u.all_tenants != 0)
    {
        anyhow::bail!(
            "an admin of all tenants exists already; log in and manage users with /api/v1/users"
        );
    }
    if let Some(t) = tenant {
        if !store.tenants().await?.iter().any(|x| &x.name == t) {
            store.put_tenant(&tenant_row(t, "")).await?;
            eprintln!("created tenant `{t}`");
        }
    }
    let row = new_user_row(NewUser {
        username: username.clone(),
        password: Secret(password),
        role: Role::Admin,
        tenants: Vec::new(),
        all_tenants: true,
    })
    .map_err(|e| anyhow::anyhow!(e.message()))?;
    store.put_user(&row).await?;
    eprintln!("created admin `{username}`; log in with POST /api/v1/auth/login");
    Ok(())
}
