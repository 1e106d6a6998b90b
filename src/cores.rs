//! CPU-bound work split over the machine's cores: consecutive runs of a slice, one scoped thread
//! each, results in order. Used where a large input is checked or formatted at once (a schedule
//! file, an API batch, `validate`'s lines).

/// The cores this process may use (its CPU quota counted).
pub fn count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `f` over consecutive runs of `items`, on at most `threads` threads, each run at least `min_run`
/// items long; `f` is given each run's first index. One run (fewer than two runs' worth of items,
/// or one thread) is done on this thread, without spawning. A panic in `f` is passed on.
pub fn map_runs<T, R, F>(items: &[T], threads: usize, min_run: usize, f: F) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(usize, &[T]) -> R + Sync,
{
    let threads = threads.min(items.len() / min_run.max(1)).max(1);
    if threads == 1 {
        return vec![f(0, items)];
    }
    let run = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(run)
            .enumerate()
            .map(|(k, part)| scope.spawn(move || f(k * run, part)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_cover_the_items_in_order_with_their_first_indices() {
        let items: Vec<usize> = (0..1000).collect();
        for (threads, min_run) in [(1, 10), (4, 10), (4, 400), (8, 1), (3, 5000)] {
            let runs = map_runs(&items, threads, min_run, |first, run| {
                assert_eq!(run[0], first, "a run starts at its first index");
                run.to_vec()
            });
            assert!(
                runs.len() <= threads,
                "{threads} threads: {} runs",
                runs.len()
            );
            assert_eq!(runs.concat(), items, "{threads} threads, runs of {min_run}");
        }
    }
}
