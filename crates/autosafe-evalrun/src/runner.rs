//! The skeleton every evaluation runner shares, so each runner gives only its key, its per-item
//! work, its side files and what counts as unmeasured: check the input's keys, open the side
//! files and the result store, skip the items already on file (resumed), run the rest through
//! the pipeline's task loop (side lines first, the result record last, so a record on file means
//! the item is done), finish the files, read the results back in input order, count them and
//! record the stage's counts in `stats.json`.

use std::collections::HashSet;
use std::future::Future;

use autosafe_pipeline::task_loop::run_items;
use autosafe_pipeline::{RecordWriter, StageStats};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{EvalRunError, Result};
use crate::eval_run::EvalRun;
use crate::store::{self, Keyed, ResultRecord};

/// What a repeated key in a runner's input is.
pub(crate) enum Repeats<I> {
    /// An input error, with this message (nothing is opened or written).
    Error(fn(&I) -> String),
    /// Evaluated once; every repeat is counted as rejected `duplicate_id`.
    Reject,
}

/// The files a runner writes beside its results (a log, trajectories, evaluator rows).
pub(crate) trait Sides<O> {
    /// The result record of an item.
    type Record: ResultRecord;
    /// Writes the side lines of one item's output and gives its result record.
    async fn write(&mut self, out: O) -> Result<Self::Record>;
    /// Waits until every side line is written and synced.
    async fn finish(self) -> Result<()>;
}

/// A runner's log: one line per item, keyed like its result record.
pub(crate) struct Log<L: Serialize + DeserializeOwned + Send + 'static>(RecordWriter<Keyed<L>>);

impl<L: Serialize + DeserializeOwned + Send + 'static> Log<L> {
    /// Opens (and recovers) the log `file` of `run`.
    pub(crate) fn open(run: &EvalRun, file: &str) -> Result<Self> {
        Ok(Log(store::open::<L>(&run.eval_file(file))?.0))
    }
}

impl<R: ResultRecord, L: Serialize + DeserializeOwned + Send + 'static> Sides<(R, L)> for Log<L> {
    type Record = R;

    async fn write(&mut self, (record, log): (R, L)) -> Result<R> {
        self.0
            .write(Keyed {
                id: record.key(),
                record: log,
            })
            .await?;
        Ok(record)
    }

    async fn finish(self) -> Result<()> {
        self.0.finish().await?;
        Ok(())
    }
}

/// One runner's input and where its results go.
pub(crate) struct Runner<'a, I> {
    /// The run directory.
    pub run: &'a EvalRun,
    /// The stage name in `stats.json`.
    pub stage: &'static str,
    /// The result file in `RUN/eval/`.
    pub file: &'static str,
    /// The input, in order.
    pub items: &'a [I],
    /// An item's key: the key of its result record.
    pub key: fn(&I) -> String,
    /// What a repeated key is.
    pub repeats: Repeats<I>,
    /// Items in flight.
    pub concurrency: usize,
}

impl<'a, I> Runner<'a, I> {
    /// Runs `work` over the items not yet on file (see the module docs). `open_sides` opens
    /// the side files once the input is checked; `unmeasured` counts a record's unmeasured
    /// parts. Returns the counts and the records of the input, in input order.
    pub(crate) async fn run<O, S, W, Fut>(
        self,
        open_sides: impl FnOnce() -> Result<S>,
        work: W,
        unmeasured: impl Fn(&S::Record, &mut StageStats),
    ) -> Result<(StageStats, Vec<S::Record>)>
    where
        S: Sides<O>,
        W: FnMut(&'a I) -> Fut,
        Fut: Future<Output = Result<O>>,
    {
        let mut stats = StageStats::default();
        let mut keys = HashSet::new();
        let mut planned = Vec::new();
        for item in self.items {
            let key = (self.key)(item);
            if keys.insert(key.clone()) {
                planned.push((key, item));
                continue;
            }
            match self.repeats {
                Repeats::Error(message) => return Err(EvalRunError::Input(message(item))),
                Repeats::Reject => stats.reject("duplicate_id"),
            }
        }
        stats.input = planned.len() as u64;
        let mut sides = open_sides()?;
        let path = self.run.eval_file(self.file);
        let (rec_w, finished) = store::open::<S::Record>(&path)?;
        let todo = planned.iter().filter_map(|(key, item)| {
            let done = finished.contains(key);
            stats.resumed += u64::from(done);
            (!done).then_some(*item)
        });
        // An item that met a transient failure is not written: it stays pending.
        let left = run_items(todo, self.concurrency, work, async |out: Result<O>| {
            let record = sides.write(out?).await?;
            rec_w.write(record.keyed()).await?;
            Ok::<(), EvalRunError>(())
        })
        .await?;
        stats.add(&left);
        sides.finish().await?;
        rec_w.finish().await?;

        let mut by_key = store::read_results::<S::Record>(&path, &keys)?;
        let records: Vec<S::Record> = planned
            .iter()
            .filter_map(|(key, _)| by_key.remove(key))
            .collect();
        stats.output = records.len() as u64;
        for r in &records {
            unmeasured(r, &mut stats);
        }
        self.run.record_stats(self.stage, &stats)?;
        Ok((stats, records))
    }
}
