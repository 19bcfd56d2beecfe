//! `tessera tenants`, `tessera keys` and `tessera whoami`.

use std::process::ExitCode;

use tessera_api::{NewKey, NewTenant, Role};

use super::ServerRef;
use crate::format;

/// Options of `tessera tenants`.
#[derive(Debug, clap::Args)]
pub struct TenantArgs {
    #[command(subcommand)]
    action: TenantAction,
    #[command(flatten)]
    server: ServerRef,
}

#[derive(Debug, clap::Subcommand)]
enum TenantAction {
    /// Create a tenant (an operator's key).
    Create {
        /// Its name: letters, digits, '-', '_' and '.'.
        name: String,
        /// Its weight in fair share between tenants (1–1000).
        #[arg(long)]
        weight: Option<u32>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the tenants (an operator sees every one, anyone else their own).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one tenant.
    Show {
        /// Its name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `tessera tenants`.
pub async fn tenants(args: TenantArgs) -> anyhow::Result<ExitCode> {
    let client = args.server.client();
    match args.action {
        TenantAction::Create { name, weight, json } => {
            let tenant = client.create_tenant(&NewTenant { name, weight }).await?;
            if json {
                return format::json(&tenant).map(|_| ExitCode::SUCCESS);
            }
            println!(
                "Created tenant {} (weight {}). Give it keys: tessera keys create --tenant {} \
                 --role admin",
                format::safe(&tenant.name),
                tenant.weight,
                format::safe(&tenant.name)
            );
        }
        TenantAction::List { json } => {
            let list = client.tenants().await?;
            if json {
                return format::json(&list).map(|_| ExitCode::SUCCESS);
            }
            let rows = list
                .tenants
                .iter()
                .map(|t| vec![t.name.clone(), t.weight.to_string(), created(t.created_at)])
                .collect();
            format::table(
                &["TENANT", "WEIGHT", "CREATED"],
                &format::safe_rows(rows, 200),
            );
        }
        TenantAction::Show { name, json } => {
            let list = client.tenants().await?;
            let Some(tenant) = list.tenants.into_iter().find(|t| t.name == name) else {
                anyhow::bail!(
                    "no tenant {} that this key reaches (tessera tenants list shows them)",
                    format::safe(&name)
                );
            };
            if json {
                return format::json(&tenant).map(|_| ExitCode::SUCCESS);
            }
            println!("Tenant:  {}", format::safe(&tenant.name));
            println!("Weight:  {}", tenant.weight);
            println!("Created: {}", created(tenant.created_at));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn created(at: u64) -> String {
    if at == 0 {
        "(built in)".into()
    } else {
        format::timestamp(at)
    }
}

/// Options of `tessera keys`.
#[derive(Debug, clap::Args)]
pub struct KeyArgs {
    #[command(subcommand)]
    action: KeyAction,
    #[command(flatten)]
    server: ServerRef,
}

#[derive(Debug, clap::Subcommand)]
enum KeyAction {
    /// Create a key and print it, once: it is never shown again.
    Create {
        /// What it may do: operator, admin, submit, read or runner.
        #[arg(long)]
        role: Role,
        /// Its tenant (an operator's choice; a tenant admin's keys are of its own tenant).
        /// Without one: an operator key, or (role runner) a fleet runner serving every
        /// tenant's deployed components.
        #[arg(long)]
        tenant: Option<String>,
        /// What it is for, shown in `keys list`.
        #[arg(long)]
        name: Option<String>,
        /// Print JSON (with the secret).
        #[arg(long)]
        json: bool,
    },
    /// List keys (never their secrets).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key: it opens nothing from now on.
    Revoke {
        /// Its id (from `keys list`).
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `tessera keys`.
pub async fn keys(args: KeyArgs) -> anyhow::Result<ExitCode> {
    let client = args.server.client();
    match args.action {
        KeyAction::Create {
            role,
            tenant,
            name,
            json,
        } => {
            let first = !client.whoami().await?.keys_required;
            let created = client.create_key(&NewKey { role, tenant, name }).await?;
            if json {
                return format::json(&created).map(|_| ExitCode::SUCCESS);
            }
            let whose = match &created.key.tenant {
                Some(t) => format!("of tenant {}", format::safe(t)),
                None if role == Role::Runner => "for a fleet runner (every tenant)".into(),
                None => "for every tenant".into(),
            };
            eprintln!(
                "Created {role} key {} {whose}. This is the only time it is shown:",
                created.key.id
            );
            println!("{}", created.secret);
            if first {
                eprintln!(
                    "This server now asks every request for a key; keep an operator key \
                     (export TESSERA_TOKEN=…)."
                );
            }
        }
        KeyAction::List { json } => {
            let list = client.keys().await?;
            if json {
                return format::json(&list).map(|_| ExitCode::SUCCESS);
            }
            let rows = list
                .keys
                .iter()
                .map(|k| {
                    vec![
                        k.id.clone(),
                        k.tenant.clone().unwrap_or_else(|| "(every)".into()),
                        k.role.to_string(),
                        k.name.clone(),
                        format::timestamp(k.created_at),
                        k.revoked_at.map_or_else(String::new, format::timestamp),
                    ]
                })
                .collect();
            format::table(
                &["KEY", "TENANT", "ROLE", "NAME", "CREATED", "REVOKED"],
                &format::safe_rows(rows, 200),
            );
        }
        KeyAction::Revoke { id, json } => {
            let key = client.revoke_key(&id).await?;
            if json {
                return format::json(&key).map(|_| ExitCode::SUCCESS);
            }
            println!("Revoked key {} ({}).", key.id, key.role);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Options of `tessera whoami`.
#[derive(Debug, clap::Args)]
pub struct WhoamiArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerRef,
}

/// Runs `tessera whoami`.
pub async fn whoami(args: WhoamiArgs) -> anyhow::Result<ExitCode> {
    let me = args.server.client().whoami().await?;
    if args.json {
        return format::json(&me).map(|_| ExitCode::SUCCESS);
    }
    let tenant = me.tenant.as_deref().map_or("every tenant".into(), |t| {
        format!("tenant {}", format::safe(t))
    });
    match &me.key {
        Some(key) => println!("{} key {key}, {tenant}", me.role),
        None if me.keys_required => println!("{} (the server's token), {tenant}", me.role),
        None => println!(
            "{} ({tenant}): this server has no keys, so anyone on loopback acts as its operator",
            me.role
        ),
    }
    Ok(ExitCode::SUCCESS)
}
