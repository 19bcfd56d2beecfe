//! Word count, map-reduce style: the root splits a text into chunks and fans out one
//! [`CountWords`] per chunk; a [`Merge`] that depends on all of them reads their outputs and
//! returns the most frequent words, which the root takes as its own output (the job's result,
//! `tessera jobs output JOB`). Each chunk also notes its word count in the job cache, and the
//! merge checks the total against it.
//!
//! Build: `cargo build --release -p word-count --target wasm32-wasip2`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tessera_guest::{Context, Subtask, Task, TaskError, export_tasks, info};

/// Counts the words of `text` in `chunks` pieces and keeps the `top` most frequent.
#[derive(Serialize, Deserialize)]
pub struct WordCount {
    /// The text.
    pub text: String,
    /// How many pieces to count in parallel.
    pub chunks: u32,
    /// How many of the most frequent words the result lists.
    pub top: u32,
}

/// Counts the words of one piece of text; its output is word → count.
#[derive(Serialize, Deserialize)]
pub struct CountWords {
    /// Which piece.
    pub index: u32,
    /// The piece.
    pub text: String,
}

/// Adds up the counts of every task it depends on and keeps the `top` most frequent words.
#[derive(Serialize, Deserialize)]
pub struct Merge {
    /// How many words the result lists.
    pub top: u32,
}

/// A word and how often it occurs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WordFrequency {
    pub word: String,
    pub count: u64,
}

/// The job's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Words in all.
    pub words: u64,
    /// Different words.
    pub distinct: u64,
    /// The most frequent, most frequent first (ties in alphabetical order).
    pub top: Vec<WordFrequency>,
}

/// The words of `text`: runs of letters and digits, lowercased.
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// `text` cut into at most `chunks` pieces of about the same number of words, at whitespace.
pub fn split(text: &str, chunks: u32) -> Vec<String> {
    let all: Vec<&str> = text.split_whitespace().collect();
    let per = all.len().div_ceil(chunks.max(1) as usize).max(1);
    all.chunks(per).map(|c| c.join(" ")).collect()
}

/// The `top` most frequent words of `counts`.
pub fn summarize(counts: &BTreeMap<String, u64>, top: u32) -> Summary {
    let mut ranked: Vec<WordFrequency> = counts
        .iter()
        .map(|(word, &count)| WordFrequency {
            word: word.clone(),
            count,
        })
        .collect();
    ranked.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.word.cmp(&b.word)));
    ranked.truncate(top as usize);
    Summary {
        words: counts.values().sum(),
        distinct: counts.len() as u64,
        top: ranked,
    }
}

impl Task for WordCount {
    fn execute(&self, ctx: &mut Context) -> Result<(), TaskError> {
        let pieces = split(&self.text, self.chunks);
        info!(ctx, pieces = pieces.len(), "Counting words");
        let counts = pieces.into_iter().enumerate().map(|(index, text)| {
            Subtask::new(&CountWords {
                index: index as u32,
                text,
            })
            .display(format!("CountWords({index})"))
            .max_retries(2)
        });
        ctx.submit_subtasks(counts)?;
        let merge = ctx.submit_subtasks([Subtask::new(&Merge { top: self.top })
            .after_all()
            .max_retries(2)])?;
        ctx.set_output_from(merge[0])?;
        Ok(())
    }
}

impl Task for CountWords {
    fn execute(&self, ctx: &mut Context) -> Result<(), TaskError> {
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for word in words(&self.text) {
            *counts.entry(word).or_default() += 1;
        }
        let total: u64 = counts.values().sum();
        ctx.cache()
            .put(&format!("words/{:05}", self.index), &total)?;
        info!(ctx, index = self.index, words = total, "Counted");
        ctx.set_output(&counts)?;
        Ok(())
    }
}

impl Task for Merge {
    fn execute(&self, ctx: &mut Context) -> Result<(), TaskError> {
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        let dependencies = ctx.dependencies()?;
        for dep in &dependencies {
            let part: BTreeMap<String, u64> = ctx.output_of(*dep)?;
            for (word, n) in part {
                *counts.entry(word).or_default() += n;
            }
        }
        let mut noted = 0u64;
        for key in ctx.cache().list("words/")? {
            noted += ctx.cache().get::<u64>(&key)?.unwrap_or(0);
        }
        let summary = summarize(&counts, self.top);
        if noted != summary.words {
            return Err(TaskError::new(format!(
                "the chunks noted {noted} words in the cache but their outputs add up to {}",
                summary.words
            )));
        }
        info!(
            ctx,
            parts = dependencies.len(),
            words = summary.words,
            "Merged"
        );
        ctx.set_output(&summary)?;
        Ok(())
    }
}

export_tasks!(WordCount, CountWords, Merge);

#[cfg(test)]
mod tests {
    use tessera_guest::SubtaskHandle;
    use tessera_guest::testing::TestContext;

    use super::*;

    #[test]
    fn the_root_fans_out_and_takes_the_merges_output() {
        let text = "a b c d e f g";
        let run = TestContext::new().run(&WordCount {
            text: text.into(),
            chunks: 3,
            top: 2,
        });
        assert!(run.result.is_ok(), "{:?}", run.result);
        assert_eq!(run.subtasks.len(), 4, "three chunks and a merge");
        assert_eq!(run.subtasks[0].input["text"], "a b c");
        assert_eq!(run.subtasks[3].depends_on, [0, 1, 2]);
        assert_eq!(run.output_from, Some(3));
    }

    #[test]
    fn a_chunk_counts_and_notes_its_total() {
        let run = TestContext::new().run(&CountWords {
            index: 7,
            text: "The cat, the HAT!".into(),
        });
        let counts: BTreeMap<String, u64> = run.output_json().unwrap();
        assert_eq!(counts["the"], 2);
        assert_eq!(counts.len(), 3);
        assert_eq!(run.cache_writes["words/00007"].as_deref(), Some(&b"4"[..]));
    }

    #[test]
    fn merge_adds_up_and_checks_the_cache() {
        let part = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
            pairs.iter().map(|(w, n)| (w.to_string(), *n)).collect()
        };
        let ctx = TestContext::new()
            .dependency(SubtaskHandle { index: 0 }, &part(&[("a", 2), ("b", 1)]))
            .dependency(SubtaskHandle { index: 1 }, &part(&[("b", 3)]))
            .cache("words/00000", &3u64)
            .cache("words/00001", &3u64);
        let run = ctx.run(&Merge { top: 1 });
        let summary: Summary = run.output_json().unwrap();
        assert_eq!(summary.words, 6);
        assert_eq!(summary.distinct, 2);
        assert_eq!(
            summary.top,
            [WordFrequency {
                word: "b".into(),
                count: 4
            }]
        );
        let wrong = TestContext::new()
            .dependency(SubtaskHandle { index: 0 }, &part(&[("a", 2)]))
            .cache("words/00000", &5u64)
            .run(&Merge { top: 1 });
        assert!(
            wrong
                .result
                .unwrap_err()
                .message()
                .contains("noted 5 words")
        );
    }

    #[test]
    fn ties_rank_alphabetically() {
        let counts = [
            ("b".to_string(), 2),
            ("a".to_string(), 2),
            ("c".to_string(), 5),
        ]
        .into();
        let s = summarize(&counts, 3);
        let order: Vec<&str> = s.top.iter().map(|w| w.word.as_str()).collect();
        assert_eq!(order, ["c", "a", "b"]);
    }
}
