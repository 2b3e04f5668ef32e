//! What a pprof message costs before anyone pays for it. [`walk`] reads the protobuf wire format
//! as it streams out of the decompressor, keeps nothing, and adds up what prost will allocate to
//! decode it: every sample, location, function, mapping, label and line as its struct, every
//! string as a `String` and its bytes, every packed or repeated number as 8 bytes. Two bytes on
//! the wire (an empty sample) become a 96-byte struct, so a byte cap alone does not bound the
//! decoded size; this walk does, and stops as soon as the budget is spent.
//! [`expanded_size`] does the same for the stacks a decoded profile expands to (a sample may list
//! one location a million times, a location hold a million lines).

use std::{
    collections::{HashMap, HashSet},
    io::{self, BufRead},
    mem::size_of,
};

use crate::profile::proto::{
    Breakdown, Function, Label, LabelSet, Line, Location, Mapping, Profile, Sample, ValueType,
};

/// The messages of `profile.proto` that hold other messages, strings or repeated numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Profile,
    Sample,
    Breakdown,
    LabelSet,
    Location,
    /// A message of scalar fields only (value type, label, mapping, line, function).
    Leaf,
}

/// What a length-delimited field of a message is.
enum Field {
    /// A nested message of this kind, decoded into a struct of this size.
    Message(Kind, usize),
    /// A repeated string.
    String,
    /// Packed repeated numbers (8 bytes each decoded).
    Packed,
    /// Anything else: skipped (prost skips unknown fields, and refuses wrong wire types).
    Other,
}

fn field(kind: Kind, number: u64) -> Field {
    use Field::*;
    match (kind, number) {
        (Kind::Profile, 1 | 11) => Message(Kind::Leaf, size_of::<ValueType>()),
        (Kind::Profile, 2) => Message(Kind::Sample, size_of::<Sample>()),
        (Kind::Profile, 3) => Message(Kind::Leaf, size_of::<Mapping>()),
        (Kind::Profile, 4) => Message(Kind::Location, size_of::<Location>()),
        (Kind::Profile, 5) => Message(Kind::Leaf, size_of::<Function>()),
        (Kind::Profile, 6) => String,
        (Kind::Profile, 13) => Packed,
        (Kind::Profile, 16) => Message(Kind::LabelSet, size_of::<LabelSet>()),
        (Kind::Sample, 1 | 2) => Packed,
        (Kind::Sample, 3) | (Kind::LabelSet, 2) => Message(Kind::Leaf, size_of::<Label>()),
        (Kind::Sample, 4) => Message(Kind::Breakdown, size_of::<Breakdown>()),
        (Kind::Breakdown, 1..=3) => Packed,
        (Kind::Location, 4) => Message(Kind::Leaf, size_of::<Line>()),
        _ => Other,
    }
}

/// Whether a varint field is one element of a repeated number (written unpacked).
fn repeated_number(kind: Kind, number: u64) -> bool {
    matches!(
        (kind, number),
        (Kind::Profile, 13) | (Kind::Sample, 1 | 2) | (Kind::Breakdown, 1..=3)
    )
}

/// A message walked within its budget.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Bytes of the message on the wire.
    pub length: u64,
    /// What decoding it allocates, about (Vec growth may add up to as much again).
    pub decoded: u64,
    pub samples: u64,
    pub locations: u64,
    pub strings: u64,
}

#[derive(Debug)]
pub enum WalkError {
    Io(io::Error),
    Malformed(&'static str),
    /// Decoding would allocate more than the budget.
    OverBudget,
}

impl From<io::Error> for WalkError {
    fn from(err: io::Error) -> Self {
        WalkError::Io(err)
    }
}

/// Walks the pprof message `input` holds (to its end) within `budget` bytes decoded.
pub fn walk(input: &mut impl BufRead, budget: u64) -> Result<Footprint, WalkError> {
    let mut walker = Walker {
        input,
        position: 0,
        budget,
        footprint: Footprint::default(),
    };
    walker.message(Kind::Profile, None)?;
    walker.footprint.length = walker.position;
    Ok(walker.footprint)
}

struct Walker<'a, R> {
    input: &'a mut R,
    position: u64,
    budget: u64,
    footprint: Footprint,
}

impl<R: BufRead> Walker<'_, R> {
    fn cost(&mut self, bytes: u64) -> Result<(), WalkError> {
        self.footprint.decoded = self.footprint.decoded.saturating_add(bytes);
        if self.footprint.decoded > self.budget {
            return Err(WalkError::OverBudget);
        }
        Ok(())
    }

    /// The fields of one message, up to `end` (the top-level message: up to the end of input).
    /// Nesting is at most three deep (profile, sample, label), fixed by [`field`].
    fn message(&mut self, kind: Kind, end: Option<u64>) -> Result<(), WalkError> {
        loop {
            match end {
                Some(end) if self.position == end => return Ok(()),
                None if self.input.fill_buf()?.is_empty() => return Ok(()),
                _ => {}
            }
            let key = self.varint()?;
            let number = key >> 3;
            if number == 0 {
                return Err(WalkError::Malformed("field number 0"));
            }
            match key & 7 {
                0 => {
                    self.varint()?;
                    if repeated_number(kind, number) {
                        self.cost(8)?;
                    }
                }
                1 => self.skip(8)?,
                5 => self.skip(4)?,
                2 => {
                    let length = self.varint()?;
                    let field_end = self
                        .position
                        .checked_add(length)
                        .filter(|&e| end.is_none_or(|end| e <= end))
                        .ok_or(WalkError::Malformed("a field runs past its message"))?;
                    match field(kind, number) {
                        Field::Message(inner, size) => {
                            match inner {
                                Kind::Sample => self.footprint.samples += 1,
                                Kind::Location => self.footprint.locations += 1,
                                _ => {}
                            }
                            self.cost(size as u64)?;
                            self.message(inner, Some(field_end))?;
                        }
                        Field::String => {
                            self.footprint.strings += 1;
                            self.cost((size_of::<String>() as u64).saturating_add(length))?;
                            self.skip(length)?;
                        }
                        Field::Packed => {
                            let numbers = self.count_varints(length)?;
                            self.cost(numbers.saturating_mul(8))?;
                        }
                        Field::Other => self.skip(length)?,
                    }
                }
                _ => return Err(WalkError::Malformed("unsupported wire type")),
            }
            if end.is_some_and(|end| self.position > end) {
                return Err(WalkError::Malformed("a field runs past its message"));
            }
        }
    }

    fn byte(&mut self) -> Result<u8, WalkError> {
        let buf = self.input.fill_buf()?;
        let Some(&b) = buf.first() else {
            return Err(WalkError::Malformed("truncated"));
        };
        self.input.consume(1);
        self.position += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, WalkError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(value);
            }
        }
        Err(WalkError::Malformed("a varint longer than 10 bytes"))
    }

    /// Skips `length` bytes; `f(chunk)` sees each chunk on the way.
    fn consume(&mut self, mut length: u64, mut f: impl FnMut(&[u8])) -> Result<(), WalkError> {
        while length > 0 {
            let buf = self.input.fill_buf()?;
            if buf.is_empty() {
                return Err(WalkError::Malformed("truncated"));
            }
            let n = buf.len().min(usize::try_from(length).unwrap_or(usize::MAX));
            f(&buf[..n]);
            self.input.consume(n);
            self.position += n as u64;
            length -= n as u64;
        }
        Ok(())
    }

    fn skip(&mut self, length: u64) -> Result<(), WalkError> {
        self.consume(length, |_| {})
    }

    /// How many varints `length` bytes of packed numbers hold (bytes that end one).
    fn count_varints(&mut self, length: u64) -> Result<u64, WalkError> {
        let mut count = 0u64;
        self.consume(length, |chunk| {
            count += chunk.iter().filter(|&&b| b < 0x80).count() as u64;
        })?;
        Ok(count)
    }
}

/// About what `report` and `serve` allocate expanding `profile` into stacks: for each distinct
/// stack, its frames and their names' bytes (folded stacks and flame graphs repeat them), and
/// each sample. Stops counting once past `budget`.
pub fn expanded_size(profile: &Profile, budget: u64) -> u64 {
    const FRAME: u64 = 32;
    let name_len = |index: i64| {
        usize::try_from(index)
            .ok()
            .and_then(|i| profile.string_table.get(i))
            .map_or(0, |s| s.len() as u64)
    };
    let functions: HashMap<u64, u64> = profile
        .function
        .iter()
        .map(|f| (f.id, name_len(f.name)))
        .collect();
    let mappings: HashMap<u64, u64> = profile
        .mapping
        .iter()
        .map(|m| (m.id, name_len(m.filename)))
        .collect();
    // A location without a name is named after its mapping's file.
    let locations: HashMap<u64, u64> = profile
        .location
        .iter()
        .map(|l| {
            let unnamed = FRAME + 2 + mappings.get(&l.mapping_id).copied().unwrap_or(9);
            let lines = l.line.iter().fold(0u64, |sum, line| {
                let name = functions.get(&line.function_id).copied().unwrap_or(0);
                sum.saturating_add(if name == 0 { unnamed } else { FRAME + name + 1 })
            });
            (l.id, if l.line.is_empty() { unnamed } else { lines })
        })
        .collect();
    let mut total = (profile.sample.len() as u64).saturating_mul(size_of::<Sample>() as u64 * 2);
    let mut seen: HashSet<&[u64]> = HashSet::new();
    for sample in &profile.sample {
        if total > budget {
            break;
        }
        if !seen.insert(&sample.location_id) {
            continue;
        }
        for id in &sample.location_id {
            let frames = locations.get(id).copied().unwrap_or(FRAME + 10);
            total = total.saturating_add(frames);
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn walk_bytes(bytes: &[u8], budget: u64) -> Result<Footprint, WalkError> {
        walk(&mut io::BufReader::new(bytes), budget)
    }

    #[test]
    fn counts_what_a_real_profile_holds() {
        let profile = Profile {
            sample: vec![
                Sample {
                    location_id: vec![1, 2, 300],
                    value: vec![1, 10_000_000],
                    label: vec![Label::default(); 2],
                    ..Sample::default()
                };
                3
            ],
            location: vec![
                Location {
                    id: 1,
                    line: vec![Line::default()],
                    ..Location::default()
                };
                2
            ],
            string_table: vec!["".into(), "main".into()],
            comment: vec![1, 1],
            ..Profile::default()
        };
        let bytes = profile.encode_to_vec();
        let footprint = walk_bytes(&bytes, u64::MAX).unwrap();
        assert_eq!(footprint.length, bytes.len() as u64);
        assert_eq!(
            (footprint.samples, footprint.locations, footprint.strings),
            (3, 2, 2)
        );
        let expected = 3 * (size_of::<Sample>() + 5 * 8 + 2 * size_of::<Label>())
            + 2 * (size_of::<Location>() + size_of::<Line>())
            + 2 * size_of::<String>()
            + 4
            + 2 * 8;
        assert_eq!(footprint.decoded, expected as u64);
    }

    #[test]
    fn empty_samples_are_charged_their_struct_and_stop_the_walk() {
        let bytes: Vec<u8> = [0x12, 0x00].repeat(1 << 20);
        let footprint = walk_bytes(&bytes, u64::MAX).unwrap();
        assert_eq!(footprint.samples, 1 << 20);
        assert!(footprint.decoded >= (1 << 20) * 48);
        assert!(matches!(
            walk_bytes(&bytes, 1 << 20),
            Err(WalkError::OverBudget)
        ));
    }

    #[test]
    fn a_string_longer_than_the_budget_is_refused_before_it_is_read() {
        // string_table entry of 2^40 bytes, of which none follow.
        let mut bytes = vec![0x32];
        let mut length = 1u64 << 40;
        while length >= 0x80 {
            bytes.push((length as u8) | 0x80);
            length >>= 7;
        }
        bytes.push(length as u8);
        assert!(matches!(
            walk_bytes(&bytes, 1 << 30),
            Err(WalkError::OverBudget)
        ));
    }

    #[test]
    fn malformed_messages_are_refused() {
        for bytes in [
            &[0x00][..],                   // field 0
            &[0x12, 0x05, 0x08][..],       // sample longer than the input
            &[0x12, 0x01, 0x0a, 0x05][..], // packed field past its sample
            &[0x0b][..],                   // group
            &[0x08, 0xff][..],             // truncated varint
        ] {
            assert!(
                matches!(walk_bytes(bytes, u64::MAX), Err(WalkError::Malformed(_))),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn a_location_repeated_in_a_stack_counts_each_time() {
        let profile = Profile {
            sample: vec![Sample {
                location_id: vec![1; 100_000],
                ..Sample::default()
            }],
            location: vec![Location {
                id: 1,
                line: vec![Line::default(); 100],
                ..Location::default()
            }],
            ..Profile::default()
        };
        assert!(expanded_size(&profile, u64::MAX) > 100_000 * 100 * 32);
        assert!(expanded_size(&profile, 1 << 20) > 1 << 20);
    }
}
