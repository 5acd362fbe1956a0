//! A child process the tests start, restart and kill.
//!
//! `do-tests-child DIR increment NAME AMOUNT` prints the counter's new value;
//! `do-tests-child DIR id NAME` prints the id of `NAME`;
//! `do-tests-child DIR value NAME` prints the counter's value.

use do_tests::{Counter, runtime};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, command, name, rest @ ..] = args.as_slice() else {
        eprintln!("usage: do-tests-child DIR (increment NAME AMOUNT | id NAME | value NAME)");
        std::process::exit(2);
    };
    let rt = runtime(std::path::Path::new(dir));
    let ns = rt.namespace::<Counter>();
    match (command.as_str(), rest) {
        ("increment", [amount]) => {
            let amount: i64 = amount.parse().expect("AMOUNT is an integer");
            println!(
                "{}",
                ns.get_by_name(name)
                    .increment(amount)
                    .await
                    .expect("increment")
            );
        }
        ("value", []) => println!("{}", ns.get_by_name(name).value().await.expect("value")),
        ("id", []) => println!("{}", ns.id_from_name(name)),
        _ => {
            eprintln!("unknown command {command:?}");
            std::process::exit(2);
        }
    }
}
