//! Work spread over the CPUs: the apply's two parallel phases (creating
//! the connection tables, verifying the programs) are a few jobs of very
//! different lengths on a machine with few CPUs.
use super::StepError;

/// Waits for every thread of a scope; the first error (a panic is one,
/// named `who`) is the result.
fn join_all(
    handles: Vec<std::thread::ScopedJoinHandle<'_, Result<(), StepError>>>,
    who: &str,
) -> Result<(), StepError> {
    // The scope joins any thread left after an error.
    handles.into_iter().try_for_each(|h| {
        h.join()
            .unwrap_or_else(|_| Err(StepError::Other(format!("{who} panicked"))))
    })
}

/// Runs `work` on every item, on one thread per CPU (at most 8), each
/// thread taking the costliest item left (by `cost`): the longest jobs
/// start first and the threads finish together. One thread per job
/// instead left a CPU idle on 2 vCPUs: jobs spawned last waited behind
/// the others, and the largest shared its CPU until the end. The first
/// error (a panic is one, named `who`) is the result; the other threads
/// stop taking items.
pub(super) fn longest_first<T: Send>(
    mut items: Vec<T>,
    cost: impl Fn(&T) -> u64,
    work: impl Fn(T) -> Result<(), StepError> + Sync,
    who: &str,
) -> Result<(), StepError> {
    // Threads pop from the end: the costliest last.
    items.sort_by_key(|t| cost(t));
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get().min(8))
        .min(items.len());
    let queue = std::sync::Mutex::new(items);
    let failed = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| -> Result<(), StepError> {
                    while !failed.load(std::sync::atomic::Ordering::Relaxed) {
                        let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop();
                        let Some(item) = next else {
                            return Ok(());
                        };
                        if let Err(e) = work(item) {
                            failed.store(true, std::sync::atomic::Ordering::Relaxed);
                            return Err(e);
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        join_all(handles, who)
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn every_item_runs_once() {
        let done = Mutex::new(Vec::new());
        let items: Vec<u64> = (0..50).collect();
        longest_first(
            items,
            |i| *i,
            |i| {
                done.lock().unwrap().push(i);
                Ok(())
            },
            "a test thread",
        )
        .unwrap();
        let mut done = done.into_inner().unwrap();
        done.sort();
        assert_eq!(done, (0..50).collect::<Vec<u64>>());
    }

    #[test]
    fn the_first_error_is_the_result_and_a_panic_is_one() {
        let r = longest_first(
            vec![1u64, 2, 3],
            |i| *i,
            |i| match i {
                3 => Err(StepError::Other("job 3 failed".into())),
                _ => Ok(()),
            },
            "a test thread",
        );
        assert!(matches!(r, Err(StepError::Other(m)) if m == "job 3 failed"));
        let r = longest_first(
            vec![1u64],
            |i| *i,
            |_| -> Result<(), StepError> { panic!("boom") },
            "a test thread",
        );
        assert!(matches!(r, Err(StepError::Other(m)) if m == "a test thread panicked"));
    }

    #[test]
    fn nothing_to_do_spawns_nothing() {
        longest_first(
            Vec::<u64>::new(),
            |i| *i,
            |_| unreachable!(),
            "a test thread",
        )
        .unwrap();
    }
}
