//! `sluice user` and `sluice acl`: SCRAM users and access control entries (as rpk's
//! `security user` and `security acl`, and kafka-acls). Each command's arguments are
//! parsed into a plain value first (`UserCommand`, `AclCommand`), so bad usage is found
//! before anything connects and the parsing is tested without a node.

use sluice_client::acl::{self, operation, pattern, permission, resource, Acl, AclFilter};
use sluice_client::schemas::sasl;

use crate::global::{Global, MECHANISM_DEFAULT};
use crate::{Args, Failure};

/// What a `user` command does.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum UserCommand {
    /// Create the user, or set its password, for one mechanism.
    Set { name: String, mechanism: &'static str, iterations: u32, password: String },
    /// Delete the user's credential for one mechanism (`None`: every one it has).
    Delete { name: String, mechanism: Option<&'static str> },
    /// List these users' credentials (none named: every user's).
    List { names: Vec<String> },
}

fn mechanism(name: &str) -> Result<&'static str, Failure> {
    sasl::ScramMechanism::from_name(name)
        .map(sasl::ScramMechanism::name)
        .ok_or_else(|| Failure::Usage(format!("--mechanism {name:?}: SCRAM-SHA-256 or SCRAM-SHA-512")))
}

pub(crate) fn parse_user(words: &[String], env: &dyn Fn(&str) -> Option<String>) -> Result<UserCommand, Failure> {
    let Some(sub) = words.first() else { return Err(Failure::Usage("user needs a subcommand".into())) };
    let args = Args::parse(&words[1..], &[])?;
    match sub.as_str() {
        "create" | "password" => {
            args.only(&["mechanism", "iterations", "password"])?;
            let name = args.name("user name")?;
            let mechanism = mechanism(args.one("mechanism").unwrap_or(MECHANISM_DEFAULT))?;
            let iterations = args.number::<u32>("iterations")?.unwrap_or(sasl::ITERATIONS_DEFAULT);
            if !(sasl::ITERATIONS_MIN..=sasl::ITERATIONS_MAX).contains(&iterations) {
                return Err(Failure::Usage(format!(
                    "--iterations {iterations}: {} to {}",
                    sasl::ITERATIONS_MIN,
                    sasl::ITERATIONS_MAX
                )));
            }
            let password = args
                .one("password")
                .map(str::to_string)
                .or_else(|| env("SLUICE_USER_PASSWORD"))
                .filter(|p| !p.is_empty())
                .ok_or_else(|| {
                    Failure::Usage(format!("user {sub} needs a password: $SLUICE_USER_PASSWORD (or --password)"))
                })?;
            Ok(UserCommand::Set { name, mechanism, iterations, password })
        }
        "delete" => {
            args.only(&["mechanism"])?;
            let name = args.name("user name")?;
            let mechanism = args.one("mechanism").map(mechanism).transpose()?;
            Ok(UserCommand::Delete { name, mechanism })
        }
        "list" => {
            args.only(&[])?;
            Ok(UserCommand::List { names: args.positional.clone() })
        }
        other => Err(Failure::Usage(format!("unknown user subcommand {other:?}"))),
    }
}

/// `user create|password|delete|list`.
pub(crate) async fn user(global: &Global, words: &[String]) -> Result<(), Failure> {
    let env = |name: &str| std::env::var(name).ok();
    let command = parse_user(words, &env)?;
    let admin = global.admin().await?;
    match command {
        UserCommand::Set { name, mechanism, iterations, password } => {
            admin.set_user_password(&name, mechanism, &password, iterations).await?;
            eprintln!("set the {mechanism} password of user {name} ({iterations} iterations)");
        }
        UserCommand::Delete { name, mechanism } => {
            let mechanisms: Vec<String> = match mechanism {
                Some(m) => vec![m.to_string()],
                None => {
                    admin.describe_users(std::slice::from_ref(&name)).await?.into_iter().map(|c| c.mechanism).collect()
                }
            };
            if mechanisms.is_empty() {
                return Err(Failure::Failed(format!("no user {name}")));
            }
            for m in &mechanisms {
                admin.delete_user(&name, m).await?;
                eprintln!("deleted the {m} credential of user {name}");
            }
        }
        UserCommand::List { names } => {
            for c in admin.describe_users(&names).await? {
                println!("{} {} iterations={}", c.user, c.mechanism, c.iterations);
            }
        }
    }
    Ok(())
}

/// What an `acl` command does.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AclCommand {
    Add(Vec<Acl>),
    /// The entries any of these filters matches.
    List(Vec<AclFilter>),
    Remove(Vec<AclFilter>),
}

/// The flags naming a resource (at most one; one for `acl add`).
const RESOURCE_FLAGS: [&str; 4] = ["topic", "group", "transactional-id", "cluster"];
/// Boolean flags of `acl`.
const ACL_BOOLEAN_FLAGS: [&str; 7] = ["cluster", "prefixed", "literal", "match", "deny", "allow", "all"];

/// The resource flag given: (resource type, name; `None` for the cluster).
fn resource_of(args: &Args) -> Result<Option<(u8, Option<String>)>, Failure> {
    let given: Vec<&(String, String)> =
        args.flags.iter().filter(|(k, _)| RESOURCE_FLAGS.contains(&k.as_str())).collect();
    let [(flag, value)] = given.as_slice() else {
        if given.len() > 1 {
            return Err(Failure::Usage("give one of --topic, --group, --transactional-id or --cluster".into()));
        }
        return Ok(None);
    };
    let kind = match flag.as_str() {
        "topic" => resource::TOPIC,
        "group" => resource::GROUP,
        "transactional-id" => resource::TRANSACTIONAL_ID,
        _ => return Ok(Some((resource::CLUSTER, None))),
    };
    if value.is_empty() {
        return Err(Failure::Usage(format!("--{flag} needs a name")));
    }
    Ok(Some((kind, Some(value.clone()))))
}

/// `--operation OP[,OP...]`, each by name in any case.
fn operations_of(args: &Args) -> Result<Vec<u8>, Failure> {
    let mut ops = Vec::new();
    for name in args.all("operation").iter().flat_map(|v| v.split(',')).map(str::trim).filter(|s| !s.is_empty()) {
        let op = operation::parse(name).ok_or_else(|| {
            Failure::Usage(format!("--operation {name:?}: one of {}", operation::names().join(", ").to_lowercase()))
        })?;
        if !ops.contains(&op) {
            ops.push(op);
        }
    }
    Ok(ops)
}

fn principal_of(args: &Args) -> Result<Option<String>, Failure> {
    match args.one("principal") {
        None => Ok(None),
        Some(p) if p.strip_prefix("User:").is_some_and(|name| !name.is_empty()) => Ok(Some(p.to_string())),
        Some(p) => Err(Failure::Usage(format!("--principal {p:?}: User:NAME (User:* for every user)"))),
    }
}

/// The one of two opposite boolean flags given (`None`: neither), e.g. --deny / --allow.
fn one_of(args: &Args, choices: &[(&str, u8)]) -> Result<Option<u8>, Failure> {
    let given: Vec<&(&str, u8)> = choices.iter().filter(|(flag, _)| args.one(flag).is_some()).collect();
    match given.as_slice() {
        [] => Ok(None),
        [(_, value)] => Ok(Some(*value)),
        _ => Err(Failure::Usage(format!(
            "give at most one of {}",
            choices.iter().map(|(f, _)| format!("--{f}")).collect::<Vec<_>>().join(", ")
        ))),
    }
}

pub(crate) fn parse_acl(words: &[String]) -> Result<AclCommand, Failure> {
    let Some(sub) = words.first() else { return Err(Failure::Usage("acl needs a subcommand".into())) };
    let args = Args::parse(&words[1..], &ACL_BOOLEAN_FLAGS)?;
    if let Some(extra) = args.positional.first() {
        return Err(Failure::Usage(format!("acl {sub} takes flags only, not {extra:?}")));
    }
    let selectors = ["principal", "topic", "group", "transactional-id", "cluster", "operation", "host"];
    let permissions = [("allow", permission::ALLOW), ("deny", permission::DENY)];
    match sub.as_str() {
        "add" => {
            args.only(&[&selectors[..], &["prefixed", "deny", "allow"]].concat())?;
            let principal =
                principal_of(&args)?.ok_or_else(|| Failure::Usage("--principal User:NAME is required".into()))?;
            let (resource_type, name) = resource_of(&args)?.ok_or_else(|| {
                Failure::Usage("give one of --topic, --group, --transactional-id or --cluster".into())
            })?;
            let prefixed = args.one("prefixed").is_some();
            if prefixed && resource_type == resource::CLUSTER {
                return Err(Failure::Usage("--prefixed names resources by a prefix; the cluster has one name".into()));
            }
            let operations = operations_of(&args)?;
            if operations.is_empty() {
                return Err(Failure::Usage("--operation OP[,OP...] is required".into()));
            }
            let permission = one_of(&args, &permissions)?.unwrap_or(permission::ALLOW);
            let host = args.one("host").unwrap_or("*").to_string();
            let resource_name = name.unwrap_or_else(|| resource::CLUSTER_NAME.to_string());
            let acls = operations
                .into_iter()
                .map(|operation| Acl {
                    resource_type,
                    resource_name: resource_name.clone(),
                    pattern_type: if prefixed { pattern::PREFIXED } else { pattern::LITERAL },
                    principal: principal.clone(),
                    host: host.clone(),
                    operation,
                    permission,
                })
                .collect();
            Ok(AclCommand::Add(acls))
        }
        "list" | "remove" => {
            let removing = sub == "remove";
            let flags = [&selectors[..], &["prefixed", "literal", "match", "deny", "allow"]].concat();
            args.only(&[&flags[..], if removing { &["all"][..] } else { &[][..] }].concat())?;
            let (resource_type, resource_name) = resource_of(&args)?.unwrap_or((acl::ANY, None));
            let patterns = [("literal", pattern::LITERAL), ("prefixed", pattern::PREFIXED), ("match", pattern::MATCH)];
            let base = AclFilter {
                resource_type,
                resource_name,
                pattern_type: one_of(&args, &patterns)?.unwrap_or(acl::ANY),
                principal: principal_of(&args)?,
                host: args.one("host").map(str::to_string),
                operation: acl::ANY,
                permission: one_of(&args, &permissions)?.unwrap_or(acl::ANY),
            };
            let operations = operations_of(&args)?;
            let filters: Vec<AclFilter> = if operations.is_empty() {
                vec![base]
            } else {
                operations.into_iter().map(|operation| AclFilter { operation, ..base.clone() }).collect()
            };
            if !removing {
                return Ok(AclCommand::List(filters));
            }
            let everything = filters.iter().any(AclFilter::is_everything);
            match (everything, args.one("all").is_some()) {
                (true, false) => {
                    Err(Failure::Usage("acl remove with no selector removes every entry: give --all to mean it".into()))
                }
                (false, true) => Err(Failure::Usage("--all removes every entry; it takes no selector".into())),
                _ => Ok(AclCommand::Remove(filters)),
            }
        }
        other => Err(Failure::Usage(format!("unknown acl subcommand {other:?}"))),
    }
}

/// `acl add|list|remove`.
pub(crate) async fn acl(global: &Global, words: &[String]) -> Result<(), Failure> {
    let command = parse_acl(words)?;
    let admin = global.admin().await?;
    match command {
        AclCommand::Add(acls) => {
            let count = acls.len();
            admin.create_acls(acls).await?;
            eprintln!("added {count} ACL entries");
        }
        AclCommand::List(filters) => {
            let mut all = Vec::new();
            for filter in &filters {
                all.extend(admin.describe_acls(filter).await?);
            }
            all.sort();
            all.dedup();
            for entry in all {
                println!("{entry}");
            }
        }
        AclCommand::Remove(filters) => {
            let removed = admin.delete_acls(&filters).await?;
            for entry in &removed {
                println!("{entry}");
            }
            eprintln!("removed {} ACL entries", removed.len());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn words(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    fn usage<T: std::fmt::Debug>(result: Result<T, Failure>) -> String {
        match result {
            Err(Failure::Usage(m)) => m,
            Err(_) => panic!("not a usage error"),
            Ok(v) => panic!("accepted: {v:?}"),
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn user_create_takes_the_password_from_the_flag_or_the_environment() {
        let set = parse_user(&words("create alice --password s3cret"), &no_env).ok().expect("accepted");
        assert_eq!(
            set,
            UserCommand::Set {
                name: "alice".into(),
                mechanism: "SCRAM-SHA-512",
                iterations: sasl::ITERATIONS_DEFAULT,
                password: "s3cret".into()
            }
        );
        let env = |name: &str| (name == "SLUICE_USER_PASSWORD").then(|| "from-env".to_string());
        let set =
            parse_user(&words("password bob --mechanism scram-sha-256 --iterations 8192"), &env).ok().expect("ok");
        assert_eq!(
            set,
            UserCommand::Set {
                name: "bob".into(),
                mechanism: "SCRAM-SHA-256",
                iterations: 8192,
                password: "from-env".into()
            }
        );
        assert!(usage(parse_user(&words("create alice"), &no_env)).contains("SLUICE_USER_PASSWORD"));
        assert!(usage(parse_user(&words("create alice --password p --mechanism PLAIN"), &no_env)).contains("PLAIN"));
        assert!(usage(parse_user(&words("create alice --password p --iterations 10"), &no_env)).contains("4096"));
        assert!(usage(parse_user(&words("create --password p"), &no_env)).contains("user name"));
    }

    #[test]
    fn user_delete_and_list() {
        assert_eq!(
            parse_user(&words("delete alice"), &no_env).ok(),
            Some(UserCommand::Delete { name: "alice".into(), mechanism: None })
        );
        assert_eq!(
            parse_user(&words("delete alice --mechanism scram-sha-512"), &no_env).ok(),
            Some(UserCommand::Delete { name: "alice".into(), mechanism: Some("SCRAM-SHA-512") })
        );
        assert_eq!(parse_user(&words("list"), &no_env).ok(), Some(UserCommand::List { names: vec![] }));
        assert!(usage(parse_user(&words("rename a b"), &no_env)).contains("rename"));
    }

    #[test]
    fn acl_add_makes_one_entry_per_operation() {
        let AclCommand::Add(acls) =
            parse_acl(&words("add --principal User:alice --topic orders --operation read,Describe-Configs"))
                .ok()
                .expect("ok")
        else {
            panic!("not an add")
        };
        let printed: Vec<String> = acls.iter().map(ToString::to_string).collect();
        assert_eq!(
            printed,
            [
                "User:alice ALLOW READ topic orders LITERAL host=*",
                "User:alice ALLOW DESCRIBE_CONFIGS topic orders LITERAL host=*"
            ]
        );
        let AclCommand::Add(acls) =
            parse_acl(&words("add --principal User:bob --group g- --prefixed --deny --operation all --host 10.0.0.1"))
                .ok()
                .expect("ok")
        else {
            panic!("not an add")
        };
        assert_eq!(acls[0].to_string(), "User:bob DENY ALL group g- PREFIXED host=10.0.0.1");
        let AclCommand::Add(acls) =
            parse_acl(&words("add --principal User:* --cluster --operation cluster_action")).ok().expect("ok")
        else {
            panic!("not an add")
        };
        assert_eq!(acls[0].to_string(), "User:* ALLOW CLUSTER_ACTION cluster kafka-cluster LITERAL host=*");
    }

    #[test]
    fn acl_add_needs_a_principal_one_resource_and_operations() {
        assert!(usage(parse_acl(&words("add --topic t --operation read"))).contains("--principal"));
        assert!(usage(parse_acl(&words("add --principal alice --topic t --operation read"))).contains("User:NAME"));
        assert!(usage(parse_acl(&words("add --principal User:a --operation read"))).contains("--topic"));
        assert!(
            usage(parse_acl(&words("add --principal User:a --topic t --group g --operation read"))).contains("one of")
        );
        assert!(usage(parse_acl(&words("add --principal User:a --topic t"))).contains("--operation"));
        assert!(usage(parse_acl(&words("add --principal User:a --topic t --operation fly"))).contains("fly"));
        assert!(usage(parse_acl(&words("add --principal User:a --cluster --prefixed --operation alter")))
            .contains("prefix"));
        assert!(usage(parse_acl(&words("add --principal User:a --topic t --operation read --allow --deny")))
            .contains("at most one"));
        assert!(usage(parse_acl(&words("add --principal User:a --topic t --operation read --all"))).contains("--all"));
    }

    #[test]
    fn acl_list_and_remove_filter_on_what_is_given() {
        let AclCommand::List(filters) = parse_acl(&words("list")).ok().expect("ok") else { panic!("not a list") };
        assert_eq!(filters, [AclFilter::default()]);
        let AclCommand::List(filters) =
            parse_acl(&words("list --topic orders --match --operation read,write")).ok().expect("ok")
        else {
            panic!("not a list")
        };
        let expected = AclFilter {
            resource_type: resource::TOPIC,
            resource_name: Some("orders".into()),
            pattern_type: pattern::MATCH,
            operation: operation::READ,
            ..AclFilter::default()
        };
        assert_eq!(filters, [expected.clone(), AclFilter { operation: operation::WRITE, ..expected }]);
        let AclCommand::Remove(filters) = parse_acl(&words("remove --principal User:alice --deny")).ok().expect("ok")
        else {
            panic!("not a remove")
        };
        assert_eq!(
            filters,
            [AclFilter { principal: Some("User:alice".into()), permission: permission::DENY, ..AclFilter::default() }]
        );
        let AclCommand::Remove(filters) = parse_acl(&words("remove --cluster")).ok().expect("ok") else {
            panic!("not a remove")
        };
        assert_eq!(filters[0].resource_type, resource::CLUSTER);
    }

    #[test]
    fn acl_remove_of_everything_needs_all() {
        assert!(usage(parse_acl(&words("remove"))).contains("--all"));
        assert_eq!(parse_acl(&words("remove --all")).ok(), Some(AclCommand::Remove(vec![AclFilter::default()])));
        assert!(usage(parse_acl(&words("remove --all --topic t"))).contains("no selector"));
        assert!(usage(parse_acl(&words("list --all"))).contains("--all"), "list takes no --all");
    }
}
