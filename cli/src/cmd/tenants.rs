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
    /// Set a tenant's weight or quotas (an operator's key); what is not given stays.
    SetQuota {
        /// The tenant.
        name: String,
        /// Weight in fair share between tenants (1–1000).
        #[arg(long)]
        weight: Option<u32>,
        /// Tasks queued at once.
        #[arg(long)]
        queued_tasks: Option<u64>,
        /// Attempts running at once across the fleet (0: no cap).
        #[arg(long)]
        running: Option<u64>,
        /// Memory ceiling per attempt, in MiB (0: the runner's own).
        #[arg(long)]
        memory_mib: Option<u32>,
        /// Deadline ceiling per attempt, in seconds (0: the runner's own).
        #[arg(long)]
        deadline_seconds: Option<u64>,
        /// Log bytes one job keeps, in MiB.
        #[arg(long)]
        log_mib_per_job: Option<u64>,
        /// Bytes of deployed components, in MiB.
        #[arg(long)]
        component_mib: Option<u64>,
        /// Requests per second per key.
        #[arg(long)]
        requests_per_second: Option<u32>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one tenant: weight, quotas, and what it uses now.
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
                .map(|t| {
                    let usage = t.usage.unwrap_or_default();
                    let running = match t.quotas.running {
                        Some(cap) => format!("{}/{cap}", usage.running),
                        None => usage.running.to_string(),
                    };
                    vec![
                        t.name.clone(),
                        t.weight.to_string(),
                        format!("{}/{}", usage.queued_tasks, t.quotas.queued_tasks),
                        running,
                        created(t.created_at),
                    ]
                })
                .collect();
            format::table(
                &["TENANT", "WEIGHT", "QUEUED/QUOTA", "RUNNING", "CREATED"],
                &format::safe_rows(rows, 200),
            );
        }
        TenantAction::SetQuota {
            name,
            weight,
            queued_tasks,
            running,
            memory_mib,
            deadline_seconds,
            log_mib_per_job,
            component_mib,
            requests_per_second,
            json,
        } => {
            let mib = |n: Option<u64>| n.map(|n| n.saturating_mul(1 << 20));
            let update = tessera_api::TenantUpdate {
                weight,
                queued_tasks,
                running,
                memory_mib,
                deadline_seconds,
                log_bytes_per_job: mib(log_mib_per_job),
                component_bytes: mib(component_mib),
                requests_per_second,
            };
            if update == tessera_api::TenantUpdate::default() {
                anyhow::bail!(
                    "nothing to change: give --weight or a quota (tessera tenants set-quota --help)"
                );
            }
            let tenant = client.update_tenant(&name, &update).await?;
            if json {
                return format::json(&tenant).map(|_| ExitCode::SUCCESS);
            }
            println!("Tenant {} now:", format::safe(&tenant.name));
            show(&tenant);
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
            println!("Tenant:   {}", format::safe(&tenant.name));
            println!("Created:  {}", created(tenant.created_at));
            show(&tenant);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A tenant's weight, quotas and usage, for people.
fn show(t: &tessera_api::Tenant) {
    let q = &t.quotas;
    let u = t.usage.unwrap_or_default();
    let mib = |b: u64| format!("{} MiB", b >> 20);
    let or = |v: Option<String>, none: &str| v.unwrap_or_else(|| none.to_string());
    println!("Weight:   {}", t.weight);
    println!("Quotas and use:");
    println!(
        "  queued tasks        {} of {}",
        u.queued_tasks, q.queued_tasks
    );
    println!(
        "  running attempts    {} of {}",
        u.running,
        or(q.running.map(|n| n.to_string()), "no cap")
    );
    println!(
        "  memory per attempt  {}",
        or(q.memory_mib.map(|m| format!("{m} MiB")), "the runner's")
    );
    println!(
        "  deadline            {}",
        or(q.deadline_seconds.map(|s| format!("{s} s")), "the runner's")
    );
    println!("  log per job         {}", mib(q.log_bytes_per_job));
    println!(
        "  components          {} of {}",
        mib(u.component_bytes),
        mib(q.component_bytes)
    );
    println!("  requests per second {} per key", q.requests_per_second);
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
