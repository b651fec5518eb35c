//! Questions for a person at a terminal: pick a backup, confirm a restore.

use std::io::{self, BufRead, IsTerminal, Write};

use anyhow::{Context, Result};

/// Whether a person can be asked: both the question's and the answer's ends are a terminal.
pub fn is_interactive() -> bool {
    io::stdin().is_terminal() && io::stderr().is_terminal()
}

/// Asks a yes/no question; only `y` or `yes` is yes.
pub fn confirm(question: &str) -> Result<bool> {
    Ok(matches!(ask(&format!("{question} [y/N] "))?.to_ascii_lowercase().as_str(), "y" | "yes"))
}

/// Lists `choices` numbered from 1 and returns the index chosen; Enter picks the first,
/// `q` or end of input none.
pub fn pick(title: &str, choices: &[String]) -> Result<Option<usize>> {
    eprintln!("{title}");
    for (i, choice) in choices.iter().enumerate() {
        eprintln!("  {:>3}) {choice}", i + 1);
    }
    loop {
        let answer = ask(&format!("Which one? [1-{}, Enter for 1, q to quit] ", choices.len()))?;
        match parse_choice(&answer, choices.len()) {
            Some(choice) => return Ok(choice),
            None => eprintln!("`{answer}` is not one of 1 to {}", choices.len()),
        }
    }
}

fn ask(prompt: &str) -> Result<String> {
    eprint!("{prompt}");
    io::stderr().flush()?;
    let mut line = String::new();
    if crate::interrupt::asking(|| io::stdin().lock().read_line(&mut line)).context("reading the answer")? == 0 {
        return Ok("q".to_owned());
    }
    Ok(line.trim().to_owned())
}

/// `Some(Some(i))` a choice, `Some(None)` quit, `None` not an answer.
fn parse_choice(answer: &str, count: usize) -> Option<Option<usize>> {
    match answer {
        "" => Some(Some(0)),
        "q" | "Q" => Some(None),
        number => number.parse::<usize>().ok().filter(|n| (1..=count).contains(n)).map(|n| Some(n - 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_choice;

    #[test]
    fn choices() {
        assert_eq!(parse_choice("", 3), Some(Some(0)));
        assert_eq!(parse_choice("3", 3), Some(Some(2)));
        assert_eq!(parse_choice("q", 3), Some(None));
        assert_eq!(parse_choice("4", 3), None);
        assert_eq!(parse_choice("0", 3), None);
        assert_eq!(parse_choice("x", 3), None);
    }
}
