//! The object's alarm as its view sees it: buffered changes first, then
//! the last one handed over, then the committed one. `flush.rs` hands the
//! change over with the object's other writes.

use super::ObjectStore;
use crate::alarm::Alarm;
use crate::error::Result;

impl ObjectStore {
    /// The object's alarm, buffered changes included.
    pub fn alarm(&self) -> Result<Option<Alarm>> {
        let mut state = self.state.borrow_mut();
        if let Some(alarm) = state.alarm_dirty {
            return Ok(alarm);
        }
        if let Some(alarm) = state.alarm_handed {
            return Ok(alarm);
        }
        let stored = self.store.alarm_of(&self.prefix)?;
        state.alarm_handed = Some(stored);
        Ok(stored)
    }

    /// Buffers a change of the object's alarm (`None` deletes it); it is
    /// committed with the object's other writes.
    pub fn set_alarm(&self, alarm: Option<Alarm>, confirm: bool) -> Result<()> {
        self.alarm()?;
        let mut state = self.state.borrow_mut();
        state.alarm_dirty = Some(alarm);
        if confirm {
            state.dirty_confirmed = true;
        }
        Ok(())
    }

    /// Removes the index entry of an alarm due at `due_ms` that is not the
    /// object's alarm (any more): the scheduler found it and the object
    /// did not know it.
    pub fn forget_stale_alarm(&self, due_ms: u64) {
        self.state.borrow_mut().alarm_stale.push(due_ms);
    }
}
