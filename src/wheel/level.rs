//! Slot arithmetic and the per-level slot arrays of the timing wheel.
//!
//! A minute (as `u64`) is read as base-64 digits, one per level: digit `k` (bits `6k..6k+6`) picks
//! the slot on level `k`. An entry is filed on the level of the most significant digit in which its
//! minute differs from the wheel's current minute. It therefore stays put until the current minute
//! reaches the start of its slot, and only then moves down (cascades) to a finer level: each entry
//! moves at most once per level, however far ahead it was scheduled.

/// Bits of a minute consumed by one level: every level has 2^6 = 64 slots.
pub(crate) const SLOT_BITS: u32 = 6;

/// Slots per level; one bit each in a level's `u64` occupancy bitmap.
pub(crate) const SLOTS: usize = 1 << SLOT_BITS;

/// Number of levels. Level `k` has 64 slots of 64^k minutes each:
///
/// - level 0: 64 × 1-minute slots = 64 minutes (~1 hour);
/// - level 1: 64 × 64-minute slots = 4 096 minutes (~2.8 days);
/// - level 2: 64 × 4 096-minute slots = 262 144 minutes (~182 days);
/// - level 3: 64 × 262 144-minute slots = 16 777 216 minutes (~31.9 years).
pub(crate) const LEVELS: usize = 4;

/// Minutes spanned by the whole wheel: 64^4 = 16 777 216 (~31.9 years).
///
/// The levels only hold minutes inside the `WHEEL_SPAN`-aligned window (the "epoch") that contains
/// the current minute; later minutes wait in the wheel's overflow list until the current minute
/// enters their epoch. Aligned windows (rather than "the next 32 years") keep a slot index
/// unambiguous without tokio's ring-buffer trick on the top level.
pub(crate) const WHEEL_SPAN: u64 = level_span(LEVELS - 1);

const SLOT_MASK: u64 = SLOTS as u64 - 1;

/// Drained slot vectors up to this capacity (16 KiB of entries) are given back to their slot:
/// a slot is refilled soon (a level-0 slot comes round every hour), so keeping small buffers
/// saves reallocations, while giving back big ones (a million-job burst) would pin that memory
/// in up to 256 slots at once.
const KEEP_CAPACITY: usize = 1024;

/// Width in minutes of one slot on `level`: 64^level.
pub(crate) const fn slot_width(level: usize) -> u64 {
    1 << (SLOT_BITS as usize * level)
}

/// Minutes spanned by all 64 slots of `level`: 64^(level + 1).
pub(crate) const fn level_span(level: usize) -> u64 {
    slot_width(level + 1)
}

/// The slot on `level` that minute `when` falls in: its base-64 digit number `level`.
pub(crate) const fn slot_for(when: u64, level: usize) -> usize {
    ((when >> (SLOT_BITS as usize * level)) & SLOT_MASK) as usize
}

/// The level an entry due at `when` is filed on while the current minute is `elapsed`, or `None`
/// when `when` lies in a later epoch than `elapsed` (see [`WHEEL_SPAN`]) and must overflow.
///
/// This is the level of the most significant base-64 digit in which the two minutes differ.
/// OR-ing in `SLOT_MASK` makes minutes that differ at most in digit 0 land on level 0 without a
/// branch, as in tokio.
pub(crate) const fn level_for(elapsed: u64, when: u64) -> Option<usize> {
    let masked = (elapsed ^ when) | SLOT_MASK;
    if masked >= WHEEL_SPAN {
        return None;
    }
    let significant = u64::BITS - 1 - masked.leading_zeros();
    Some((significant / SLOT_BITS) as usize)
}

/// First minute of slot `slot` on `level`, in the level window (64^(level+1)-aligned) that contains
/// `now`.
pub(crate) const fn slot_start(now: u64, level: usize, slot: usize) -> u64 {
    let level_start = now & !(level_span(level) - 1);
    level_start + slot as u64 * slot_width(level)
}

/// First minute of the epoch (see [`WHEEL_SPAN`]) that contains `when`.
pub(crate) const fn epoch_start(when: u64) -> u64 {
    when & !(WHEEL_SPAN - 1)
}

/// The first slot at or after `from` whose bit is set in `occupied`. `from` must be below 64.
pub(crate) const fn next_occupied(occupied: u64, from: usize) -> Option<usize> {
    let ahead = occupied & (u64::MAX << from);
    if ahead == 0 {
        None
    } else {
        Some(ahead.trailing_zeros() as usize)
    }
}

/// Bitmap of the slots `0..=slot`.
const fn through(slot: usize) -> u64 {
    (2u64 << slot).wrapping_sub(1)
}

/// One scheduled firing of a job, as filed in a slot (16 bytes).
///
/// `generation` ties the entry to one particular scheduling of `job`: once the job is removed,
/// rescheduled or handed out, the job table no longer matches the entry, and the entry is dropped
/// when it surfaces instead of being searched for and unlinked.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) at: u64,
    pub(crate) job: u32,
    pub(crate) generation: u32,
}

/// The 64 slots of one level plus the bitmap of the non-empty ones, which is what makes finding
/// the next due slot O(1) instead of a scan.
#[derive(Clone)]
pub(crate) struct Level {
    level: usize,
    occupied: u64,
    slots: [Vec<Entry>; SLOTS],
}

impl Level {
    pub(crate) fn new(level: usize) -> Level {
        debug_assert!(level < LEVELS, "level {level} out of range");
        Level {
            level,
            occupied: 0,
            slots: std::array::from_fn(|_| Vec::new()),
        }
    }

    pub(crate) fn occupied(&self) -> u64 {
        self.occupied
    }

    pub(crate) fn slot(&self, slot: usize) -> &[Entry] {
        &self.slots[slot]
    }

    /// Number of entries (live or stale) on this level.
    pub(crate) fn entries(&self) -> usize {
        self.slots.iter().map(Vec::len).sum()
    }

    /// Files `entry` in the slot its minute selects on this level; the caller chose the level.
    pub(crate) fn push(&mut self, entry: Entry) {
        let slot = slot_for(entry.at, self.level);
        self.slots[slot].push(entry);
        self.occupied |= 1 << slot;
    }

    /// The first occupied slot whose time has not come yet, with its first minute, while the
    /// current minute is `now`.
    ///
    /// Every entry on this level is later than `now` and shares the digits above this level with
    /// it, so occupied slots are never behind `now`'s own slot; the first one found is the earliest.
    pub(crate) fn next_expiration(&self, now: u64) -> Option<(usize, u64)> {
        let now_slot = slot_for(now, self.level);
        debug_assert!(
            self.occupied & through(now_slot) == 0,
            "level {} has occupied slots at or behind minute {now} (slot {now_slot}): {:#018x}",
            self.level,
            self.occupied,
        );
        let slot = next_occupied(self.occupied, now_slot)?;
        let deadline = slot_start(now, self.level, slot);
        debug_assert!(
            deadline > now,
            "level {} slot {slot} starts at {deadline} <= {now}",
            self.level
        );
        Some((slot, deadline))
    }

    /// Empties `slot` and hands its entries to the caller; give the vector back with
    /// [`Level::restore_slot`] once drained so its allocation can be reused.
    pub(crate) fn take_slot(&mut self, slot: usize) -> Vec<Entry> {
        self.occupied &= !(1 << slot);
        std::mem::take(&mut self.slots[slot])
    }

    /// Gives a drained vector back to `slot` when that is worth it (see [`KEEP_CAPACITY`]).
    pub(crate) fn restore_slot(&mut self, slot: usize, mut spare: Vec<Entry>) {
        spare.clear();
        // Entries pushed meanwhile (none expected: cascading only moves entries down) win.
        if spare.capacity() <= KEEP_CAPACITY && self.slots[slot].capacity() == 0 {
            self.slots[slot] = spare;
        }
    }

    /// Drops every entry `keep` rejects; returns how many were dropped.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&Entry) -> bool) -> usize {
        let mut dropped = 0;
        for (slot, entries) in self.slots.iter_mut().enumerate() {
            if entries.is_empty() {
                continue;
            }
            let before = entries.len();
            entries.retain(|entry| keep(entry));
            dropped += before - entries.len();
            if entries.is_empty() {
                self.occupied &= !(1 << slot);
            }
            // A purge can leave a slot mostly empty; don't keep the old peak allocated.
            if entries.capacity() > KEEP_CAPACITY && entries.len() < entries.capacity() / 4 {
                entries.shrink_to(entries.len() * 2);
            }
        }
        dropped
    }

    /// Bytes of heap held by this level's slot vectors.
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.slots
            .iter()
            .map(|slot| slot.capacity() * std::mem::size_of::<Entry>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Digit-by-digit reference for `level_for`.
    fn level_for_reference(elapsed: u64, when: u64) -> Option<usize> {
        if elapsed / WHEEL_SPAN != when / WHEEL_SPAN {
            return None;
        }
        (0..LEVELS)
            .rev()
            .find(|&level| slot_for(elapsed, level) != slot_for(when, level))
            .or(Some(0))
    }

    /// Level windows to test in: the first one, a later one, and one with high bits set in every
    /// digit above the wheel (as real minutes since 1970 have).
    fn bases(level: usize) -> [u64; 4] {
        let span = level_span(level);
        [0, span, 7 * span, (0x5a5a_5a5a_5a5a << 24) & !(span - 1)]
    }

    #[test]
    fn geometry() {
        assert_eq!(SLOTS, 64);
        assert_eq!(
            (0..LEVELS).map(slot_width).collect::<Vec<_>>(),
            [1, 64, 4_096, 262_144]
        );
        assert_eq!(
            (0..LEVELS).map(level_span).collect::<Vec<_>>(),
            [64, 4_096, 262_144, 16_777_216]
        );
        assert_eq!(WHEEL_SPAN, 16_777_216);
        for level in 0..LEVELS {
            assert_eq!(level_span(level), SLOTS as u64 * slot_width(level));
        }
        assert_eq!(std::mem::size_of::<Entry>(), 16);
    }

    #[test]
    fn slot_for_every_level_and_slot() {
        for level in 0..LEVELS {
            let width = slot_width(level);
            for base in bases(level) {
                for slot in 0..SLOTS {
                    let start = base + slot as u64 * width;
                    for when in [start, start + width / 2, start + width - 1] {
                        assert_eq!(slot_for(when, level), slot, "level {level} minute {when}");
                        // Digits below and above are untouched by this level's slot.
                        if level > 0 {
                            assert_eq!(
                                slot_for(start, level - 1),
                                0,
                                "level {level} start {start}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn slot_start_every_level_and_slot() {
        for level in 0..LEVELS {
            let width = slot_width(level);
            for base in bases(level) {
                for now_slot in 0..SLOTS {
                    // `now` anywhere inside the window: start, middle and end of each slot.
                    let now_start = base + now_slot as u64 * width;
                    for now in [now_start, now_start + width - 1] {
                        for slot in 0..SLOTS {
                            let start = slot_start(now, level, slot);
                            assert_eq!(
                                start,
                                base + slot as u64 * width,
                                "level {level} now {now}"
                            );
                            assert_eq!(slot_for(start, level), slot);
                            assert_eq!(start % width, 0);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn level_for_every_level_and_slot_pair() {
        for level in 0..LEVELS {
            let width = slot_width(level);
            for base in bases(level) {
                for from in 0..SLOTS {
                    for to in from..SLOTS {
                        // Lowest and highest minute of each slot, so every lower digit is covered
                        // at both extremes.
                        for elapsed in [
                            base + from as u64 * width,
                            base + (from as u64 + 1) * width - 1,
                        ] {
                            for when in
                                [base + to as u64 * width, base + (to as u64 + 1) * width - 1]
                            {
                                if when < elapsed {
                                    continue;
                                }
                                let expected = if to > from {
                                    Some(level)
                                } else {
                                    level_for_reference(elapsed, when)
                                };
                                assert_eq!(
                                    level_for(elapsed, when),
                                    expected,
                                    "{elapsed} -> {when}"
                                );
                                assert_eq!(
                                    level_for(elapsed, when),
                                    level_for_reference(elapsed, when)
                                );
                                if let Some(found) = level_for(elapsed, when) {
                                    assert!(found <= level, "{elapsed} -> {when}");
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn level_for_epoch_boundaries_overflow() {
        for epoch in [0, 1, 2, 1_000] {
            let start = epoch * WHEEL_SPAN;
            let end = start + WHEEL_SPAN - 1;
            assert_eq!(level_for(start, end), Some(LEVELS - 1));
            assert_eq!(level_for(start, end + 1), None);
            assert_eq!(level_for(end, end + 1), None);
            assert_eq!(level_for(end, end + 2 * WHEEL_SPAN), None);
            assert_eq!(epoch_start(start), start);
            assert_eq!(epoch_start(end), start);
            assert_eq!(epoch_start(end + 1), end + 1);
        }
        assert_eq!(level_for(u64::MAX - 1, u64::MAX), Some(0));
        assert_eq!(level_for(0, u64::MAX), None);
    }

    #[test]
    fn level_for_matches_reference_near_every_boundary() {
        let boundaries = (0..=LEVELS)
            .map(slot_width)
            .flat_map(|w| [w, 2 * w, 63 * w, 64 * w]);
        for boundary in boundaries {
            let near = boundary.saturating_sub(70)..=boundary + 70;
            for elapsed in near.clone() {
                for when in near
                    .clone()
                    .chain([boundary + WHEEL_SPAN - 1, boundary + WHEEL_SPAN])
                {
                    assert_eq!(
                        level_for(elapsed, when),
                        level_for_reference(elapsed, when),
                        "{elapsed} -> {when}"
                    );
                }
            }
        }
    }

    #[test]
    fn next_occupied_every_slot_pair() {
        assert_eq!(next_occupied(0, 0), None);
        for from in 0..SLOTS {
            for slot in 0..SLOTS {
                let expected = (slot >= from).then_some(slot);
                assert_eq!(
                    next_occupied(1 << slot, from),
                    expected,
                    "from {from} slot {slot}"
                );
                // A second, later bit never hides the first.
                for later in slot + 1..SLOTS {
                    let bits = (1 << slot) | (1 << later);
                    let expected = if slot >= from {
                        Some(slot)
                    } else {
                        (later >= from).then_some(later)
                    };
                    assert_eq!(next_occupied(bits, from), expected);
                }
            }
            assert_eq!(next_occupied(u64::MAX, from), Some(from));
            assert_eq!(through(from).count_ones() as usize, from + 1);
        }
    }

    #[test]
    fn level_push_take_every_level_and_slot() {
        for level in 0..LEVELS {
            let mut l = Level::new(level);
            let width = slot_width(level);
            for slot in 0..SLOTS {
                let at = slot as u64 * width + width / 3;
                l.push(Entry {
                    at,
                    job: slot as u32,
                    generation: 0,
                });
                assert_eq!(l.occupied() & (1 << slot), 1 << slot);
                assert_eq!(
                    l.slot(slot),
                    [Entry {
                        at,
                        job: slot as u32,
                        generation: 0
                    }]
                );
            }
            assert_eq!(l.occupied(), u64::MAX);
            assert_eq!(l.entries(), SLOTS);
            for slot in 0..SLOTS {
                // From just before the slot, the slot is the next expiration, starting on time.
                if slot > 0 {
                    let now = slot as u64 * width - 1;
                    assert_eq!(
                        l.next_expiration(now),
                        Some((slot, slot as u64 * width)),
                        "level {level}"
                    );
                }
                let taken = l.take_slot(slot);
                assert_eq!(taken.len(), 1);
                assert_eq!(l.occupied() & through(slot), 0);
                l.restore_slot(slot, taken);
                assert!(l.slot(slot).is_empty());
            }
            assert_eq!(l.occupied(), 0);
            assert_eq!(l.next_expiration(0), None);
        }
    }

    #[test]
    fn retain_clears_bits_and_counts() {
        let mut l = Level::new(1);
        for job in 0..200u32 {
            l.push(Entry {
                at: u64::from(job) * 20,
                job,
                generation: 0,
            });
        }
        let dropped = l.retain(|entry| entry.job % 2 == 0);
        assert_eq!(dropped, 100);
        assert_eq!(l.entries(), 100);
        for slot in 0..SLOTS {
            assert_eq!(
                l.occupied() & (1 << slot) != 0,
                !l.slot(slot).is_empty(),
                "slot {slot}"
            );
        }
        assert_eq!(l.retain(|_| false), 100);
        assert_eq!(l.occupied(), 0);
    }

    #[test]
    fn big_drained_slots_are_not_kept() {
        let mut l = Level::new(0);
        for job in 0..5_000 {
            l.push(Entry {
                at: 3,
                job,
                generation: 0,
            });
        }
        let mut taken = l.take_slot(3);
        taken.clear();
        l.restore_slot(3, taken);
        assert_eq!(l.heap_bytes(), 0);
        l.push(Entry {
            at: 3,
            job: 0,
            generation: 0,
        });
        let taken = l.take_slot(3);
        l.restore_slot(3, taken);
        assert!(l.heap_bytes() > 0, "a small buffer is kept for reuse");
    }
}
