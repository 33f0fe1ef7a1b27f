//! Row generators: one function per table, plus the state that makes rows belong
//! together (chat conversations with members and a clock, GPS tracks that move,
//! sensor streams that tick at a fixed rate).

use mobilesyncdb_crdt::Value;

use super::dice::Dice;
use super::tables::Kind;
use super::{Fields, text, words};

/// 2024-01-01T00:00:00Z: generated data lives in a fixed, recent window rather
/// than near the wall clock, so that a seed always gives the same bytes.
pub const START_MS: i64 = 1_704_067_200_000;
/// The window most records are created in.
pub const SPAN_MS: i64 = 180 * DAY_MS;
pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// App users: todos, contacts and messages belong to these. Their ids look like
/// an identity provider's (28 letters and digits); records that clients create
/// offline (todos, messages, contacts, conversations, thumbnails) get UUIDs, and
/// device logs (GPS fixes, sensor readings) sequential ids.
const USERS: usize = 100;
/// Metres per degree of latitude.
const METERS_PER_LAT_DEGREE: f64 = 111_320.0;

/// A chat conversation: who is in it and when its last message was sent.
struct Conversation {
    id: String,
    members: Vec<usize>,
    last_sent: i64,
}

/// A GPS track being recorded: where the phone is and where it is heading.
struct Track {
    id: String,
    seq: i64,
    lat: f64,
    lon: f64,
    altitude: f64,
    /// Unit vector of the heading, (north, east).
    heading: (f64, f64),
    /// Typical speed of the activity in m/s, and the current speed.
    cruise: f64,
    speed: f64,
    meters_per_lon_degree: f64,
    at: i64,
}

/// One kind of reading from one device, taken at a fixed interval.
struct Stream {
    device: String,
    kind: &'static str,
    interval: i64,
    value: f64,
    at: i64,
}

/// Makes rows for every table.
pub struct Generator {
    dice: Dice,
    users: Vec<String>,
    conversations: Vec<Conversation>,
    tracks: Vec<Track>,
    streams: Vec<Stream>,
    /// The next sequential id number per table.
    numbers: [u64; 6],
}

/// How many of a pooled entity (conversations, tracks, devices) a data set of
/// `target_bytes` has: one per `bytes_each`, within `min..=max`, so that a small
/// set still has several and a large one does not get thousands.
fn pool_size(target_bytes: usize, bytes_each: usize, min: usize, max: usize) -> usize {
    (target_bytes / bytes_each).clamp(min, max)
}

impl Generator {
    /// A generator for a data set of about `target_bytes` of JSON.
    pub fn new(seed: u64, target_bytes: usize) -> Generator {
        let mut dice = Dice::new(seed);
        let users = (0..USERS).map(|_| dice.token(28)).collect();
        let conversations = (0..pool_size(target_bytes, 25_000, 3, 400))
            .map(|_| new_conversation(&mut dice))
            .collect();
        let tracks = (0..pool_size(target_bytes, 50_000, 2, 300))
            .map(|_| new_track(&mut dice))
            .collect();
        let streams = (0..pool_size(target_bytes, 80_000, 2, 150))
            .flat_map(|_| new_device(&mut dice))
            .collect();
        Generator {
            dice,
            users,
            conversations,
            tracks,
            streams,
            numbers: [0; 6],
        }
    }

    /// Whether a row of `kind` can be made now: thumbnails need a todo or message
    /// to belong to.
    pub fn ready(kind: Kind, tables: &[Vec<Fields>]) -> bool {
        kind != Kind::Thumbnails
            || !tables[Kind::Todos.index()].is_empty()
            || !tables[Kind::Messages.index()].is_empty()
    }

    /// A new row of `kind`; `tables` holds the rows made so far, for references.
    /// `None` when the row cannot be made yet (see [`Generator::ready`]).
    pub fn row(&mut self, kind: Kind, tables: &[Vec<Fields>]) -> Option<Fields> {
        Some(match kind {
            Kind::Todos => self.todo(),
            Kind::Messages => self.message(),
            Kind::Contacts => self.contact(),
            Kind::GpsPoints => self.gps_point(),
            Kind::SensorReadings => self.sensor_reading(),
            Kind::Thumbnails => self.thumbnail(
                &tables[Kind::Todos.index()],
                &tables[Kind::Messages.index()],
            )?,
        })
    }

    /// The next sequential number for `kind`'s ids, from 1.
    fn number(&mut self, kind: Kind) -> u64 {
        let slot = &mut self.numbers[kind.index()];
        *slot += 1;
        *slot
    }

    /// An app user, the heavy ones more often.
    fn user(&mut self) -> String {
        self.users[self.dice.skewed(self.users.len())].clone()
    }

    fn todo(&mut self) -> Fields {
        let owner = self.user();
        let dice = &mut self.dice;
        let created = START_MS + dice.int(0, SPAN_MS);
        // Many todos are never touched again after creation.
        let updated = if dice.chance(0.4) {
            created
        } else {
            created + dice.int(MINUTE_MS, 30 * DAY_MS)
        };
        let mut row = Fields::new();
        put(&mut row, "id", dice.uuid());
        put(&mut row, "owner", owner);
        put(&mut row, "title", text::todo_title(dice));
        if dice.chance(0.4) {
            put(&mut row, "notes", text::todo_note(dice));
        }
        put(&mut row, "done", Value::Bool(dice.chance(0.35)));
        put(
            &mut row,
            "priority",
            Value::Int(dice.pick(&[0, 0, 0, 1, 1, 1, 2, 2, 3, 4])),
        );
        if dice.chance(0.45) {
            put(&mut row, "due", Value::Timestamp(due_after(dice, created)));
        }
        put(&mut row, "tags", tags(dice));
        put(&mut row, "created_at", Value::Timestamp(created));
        put(&mut row, "updated_at", Value::Timestamp(updated));
        row
    }

    fn message(&mut self) -> Fields {
        let dice = &mut self.dice;
        let index = dice.skewed(self.conversations.len());
        let conversation = &mut self.conversations[index];
        let sender = self.users[dice.pick(&conversation.members)].clone();
        conversation.last_sent += message_gap(dice);
        let mut row = Fields::new();
        put(&mut row, "id", dice.uuid());
        put(&mut row, "conversation", conversation.id.clone());
        put(&mut row, "sender", sender);
        put(&mut row, "body", text::message_body(dice));
        put(
            &mut row,
            "sent_at",
            Value::Timestamp(conversation.last_sent),
        );
        put(&mut row, "edited", Value::Bool(dice.chance(0.04)));
        let reactions = if dice.chance(0.75) {
            0
        } else {
            1 + dice.skewed(6) as i64
        };
        put(&mut row, "reactions", Value::Counter(reactions));
        row
    }

    fn contact(&mut self) -> Fields {
        let owner = self.user();
        let dice = &mut self.dice;
        let (first, last) = text::person_name(dice);
        let mut row = Fields::new();
        // Offline-first clients create ids without asking the server: UUIDs.
        put(&mut row, "id", dice.uuid());
        put(&mut row, "owner", owner);
        // Some address book entries only have a first name.
        let name = if dice.chance(0.08) {
            first.to_owned()
        } else {
            format!("{first} {last}")
        };
        put(&mut row, "name", name);
        if dice.chance(0.8) {
            put(&mut row, "email", text::email(dice, first, last));
        }
        if dice.chance(0.85) {
            put(&mut row, "phone", text::phone(dice));
        }
        if dice.chance(0.45) {
            put(&mut row, "company", dice.pick(words::COMPANIES));
        }
        put(&mut row, "favourite", Value::Bool(dice.chance(0.12)));
        put(
            &mut row,
            "updated_at",
            Value::Timestamp(START_MS + dice.int(0, SPAN_MS)),
        );
        row
    }

    fn gps_point(&mut self) -> Fields {
        let number = self.number(Kind::GpsPoints);
        let dice = &mut self.dice;
        let index = dice.below(self.tracks.len());
        let track = &mut self.tracks[index];
        if track.seq > 0 {
            advance(dice, track);
        }
        track.seq += 1;
        // Phones report positions with metres of noise around the true path.
        let accuracy = round_to(3.0 + dice.gaussian().abs() * 6.0, 10.0);
        let noise = accuracy / 3.0;
        let lat = track.lat + dice.gaussian() * noise / METERS_PER_LAT_DEGREE;
        let lon = track.lon + dice.gaussian() * noise / track.meters_per_lon_degree;
        let mut row = Fields::new();
        put(&mut row, "id", format!("gps-{number:07}"));
        put(&mut row, "track", track.id.clone());
        put(&mut row, "seq", Value::Int(track.seq));
        put(&mut row, "lat", Value::Float(round_to(lat, 1e7)));
        put(&mut row, "lon", Value::Float(round_to(lon, 1e7)));
        if dice.chance(0.95) {
            put(
                &mut row,
                "altitude",
                Value::Float(round_to(track.altitude, 10.0)),
            );
        }
        put(&mut row, "accuracy", Value::Float(accuracy));
        if dice.chance(0.9) {
            put(
                &mut row,
                "speed",
                Value::Float(round_to(track.speed, 100.0)),
            );
        }
        put(&mut row, "recorded_at", Value::Timestamp(track.at));
        row
    }

    fn sensor_reading(&mut self) -> Fields {
        let number = self.number(Kind::SensorReadings);
        let dice = &mut self.dice;
        let index = dice.below(self.streams.len());
        let stream = &mut self.streams[index];
        stream.at += stream.interval;
        stream.value = next_reading(dice, stream.kind, stream.value);
        let mut row = Fields::new();
        put(&mut row, "id", format!("reading-{number:07}"));
        put(&mut row, "device", stream.device.clone());
        put(&mut row, "kind", stream.kind);
        put(&mut row, "unit", unit_of(stream.kind));
        put(&mut row, "value", Value::Float(stream.value));
        put(&mut row, "recorded_at", Value::Timestamp(stream.at));
        row
    }

    fn thumbnail(&mut self, todos: &[Fields], messages: &[Fields]) -> Option<Fields> {
        let dice = &mut self.dice;
        // Photos are attached to chat messages more often than to todos.
        let from_messages = !messages.is_empty() && (todos.is_empty() || dice.chance(0.6));
        let (source, owner_field, time_field) = if from_messages {
            (messages, "sender", "sent_at")
        } else {
            (todos, "owner", "created_at")
        };
        if source.is_empty() {
            return None;
        }
        let parent = &source[dice.below(source.len())];
        let (width, height) = dice.pick(words::THUMBNAIL_SIZES);
        let mut row = Fields::new();
        put(&mut row, "id", dice.uuid());
        put(&mut row, "owner", parent.get(owner_field)?.clone());
        put(&mut row, "record_ref", parent.get("id")?.clone());
        put(&mut row, "mime", "image/jpeg");
        put(&mut row, "width", Value::Int(width));
        put(&mut row, "height", Value::Int(height));
        put(
            &mut row,
            "data",
            Value::bytes(jpeg_like(dice, width, height)),
        );
        if let (Some(Value::Timestamp(at)), true) = (parent.get(time_field), dice.chance(0.85)) {
            put(
                &mut row,
                "taken_at",
                Value::Timestamp(at - dice.int(0, 10 * MINUTE_MS)),
            );
        }
        Some(row)
    }
}

/// Sets a field.
fn put(row: &mut Fields, name: &str, value: impl Into<Value>) {
    row.insert(name.to_owned(), value.into());
}

/// `x` rounded to a multiple of `1 / scale` (exact IEEE arithmetic, so portable).
fn round_to(x: f64, scale: f64) -> f64 {
    (x * scale).round() / scale
}

/// A due date a few hours to three weeks after `created`, on a quarter hour as
/// date pickers set them.
pub fn due_after(dice: &mut Dice, created: i64) -> i64 {
    let due = created + dice.int(2 * HOUR_MS, 21 * DAY_MS);
    due - due % (15 * MINUTE_MS)
}

/// Zero to three distinct tags.
pub fn tags(dice: &mut Dice) -> Value {
    let count = dice.skewed(4);
    let mut chosen: Vec<&str> = Vec::with_capacity(count);
    while chosen.len() < count {
        let tag = dice.pick(words::TAGS);
        if !chosen.contains(&tag) {
            chosen.push(tag);
        }
    }
    Value::List(chosen.into_iter().map(Value::from).collect())
}

/// The time between two messages of a conversation: bursts of quick replies,
/// then pauses of minutes or hours.
fn message_gap(dice: &mut Dice) -> i64 {
    match dice.below(100) {
        0..=59 => dice.int(2_000, 120_000),
        60..=84 => dice.int(2 * MINUTE_MS, HOUR_MS),
        _ => dice.int(HOUR_MS, 20 * HOUR_MS),
    }
}

fn new_conversation(dice: &mut Dice) -> Conversation {
    // Most chats are one-to-one; some are groups.
    let size = if dice.chance(0.7) {
        2
    } else {
        dice.int(3, 8) as usize
    };
    let mut members: Vec<usize> = Vec::with_capacity(size);
    while members.len() < size {
        let member = dice.below(USERS);
        if !members.contains(&member) {
            members.push(member);
        }
    }
    Conversation {
        id: dice.uuid(),
        members,
        last_sent: START_MS + dice.int(0, SPAN_MS / 2),
    }
}

fn new_track(dice: &mut Dice) -> Track {
    let city = &words::CITIES[dice.below(words::CITIES.len())];
    // Walking, running, cycling or driving.
    let cruise = dice.pick(&[1.4, 1.4, 3.0, 5.5, 13.0]);
    Track {
        id: format!("trk-{}", dice.uuid()),
        seq: 0,
        lat: city.lat + dice.uniform(-0.08, 0.08),
        lon: city.lon + dice.uniform(-0.08, 0.08),
        altitude: city.altitude + dice.uniform(-10.0, 30.0),
        heading: unit(dice.gaussian(), dice.gaussian()),
        cruise,
        speed: cruise,
        meters_per_lon_degree: city.meters_per_lon_degree,
        at: START_MS + dice.int(0, SPAN_MS),
    }
}

/// The unit vector along (north, east); due north for a zero vector.
fn unit(north: f64, east: f64) -> (f64, f64) {
    let length = (north * north + east * east).sqrt();
    if length > 0.0 {
        (north / length, east / length)
    } else {
        (1.0, 0.0)
    }
}

/// Moves a track on by one fix, 1–5 s later: the heading turns a little (a small
/// rotation, which avoids `sin`/`cos` whose last bits differ between platforms), the
/// speed drifts around the activity's pace and the altitude wanders.
fn advance(dice: &mut Dice, track: &mut Track) {
    let elapsed = dice.int(1, 5) * 1_000 + dice.int(-40, 40);
    track.at += elapsed;
    let turn = dice.gaussian() * 0.08;
    let (north, east) = track.heading;
    track.heading = unit(north - turn * east, east + turn * north);
    track.speed = (track.speed + dice.gaussian() * 0.05 * track.cruise)
        .clamp(0.3 * track.cruise, 1.6 * track.cruise);
    let distance = track.speed * elapsed as f64 / 1_000.0;
    track.lat += track.heading.0 * distance / METERS_PER_LAT_DEGREE;
    track.lon += track.heading.1 * distance / track.meters_per_lon_degree;
    track.altitude += dice.gaussian() * 0.3;
}

/// The streams of a new device: a wearable (steps and heart rate) or a home
/// sensor (temperature, humidity, pressure).
fn new_device(dice: &mut Dice) -> Vec<Stream> {
    let device = format!("dev-{}", dice.hex(12));
    let kinds = if dice.chance(0.5) {
        words::WEARABLE_KINDS
    } else {
        words::ENVIRONMENT_KINDS
    };
    let start = START_MS + dice.int(0, SPAN_MS) / MINUTE_MS * MINUTE_MS;
    kinds
        .iter()
        .map(|&kind| {
            let (interval, value) = match kind {
                "heart_rate" => (5_000, 72.0),
                "pressure" => (5 * MINUTE_MS, 1013.0),
                "humidity" => (MINUTE_MS, 45.0),
                "temperature" => (MINUTE_MS, 21.5),
                _ => (MINUTE_MS, 0.0),
            };
            Stream {
                device: device.clone(),
                kind,
                interval,
                value,
                at: start,
            }
        })
        .collect()
}

/// The unit a sensor kind reports in.
fn unit_of(kind: &str) -> &'static str {
    match kind {
        "temperature" => "°C",
        "humidity" => "%",
        "pressure" => "hPa",
        "heart_rate" => "bpm",
        _ => "steps",
    }
}

/// The next reading of a stream: a random walk pulled back towards a typical value,
/// rounded to the sensor's resolution. Steps per minute are mostly zero.
fn next_reading(dice: &mut Dice, kind: &str, last: f64) -> f64 {
    let walk = |dice: &mut Dice, mean: f64, step: f64| {
        last + dice.gaussian() * step + (mean - last) * 0.05
    };
    match kind {
        "steps" if dice.chance(0.35) => dice.int(5, 130) as f64,
        "steps" => 0.0,
        "heart_rate" => walk(dice, 72.0, 2.5).clamp(45.0, 185.0).round(),
        "pressure" => round_to(walk(dice, 1013.0, 0.3), 10.0),
        "humidity" => round_to(walk(dice, 45.0, 0.6).clamp(5.0, 99.0), 10.0),
        _ => round_to(walk(dice, 21.5, 0.12), 100.0),
    }
}

/// Bytes that look like a baseline JPEG of `width` × `height`: the SOI marker, a
/// JFIF APP0 segment and a SOF0 frame header, then high-entropy "scan data" (real
/// thumbnails are already compressed, so general-purpose compressors gain
/// nothing) and the EOI marker. 1–6 KB, larger for larger images.
fn jpeg_like(dice: &mut Dice, width: i64, height: i64) -> Vec<u8> {
    let bits_per_pixel = dice.uniform(0.5, 1.0);
    let size = ((width * height) as f64 * bits_per_pixel / 8.0) as usize;
    let size = size.clamp(1_024, 6_144);
    let [width_high, width_low] = (width as u16).to_be_bytes();
    let [height_high, height_low] = (height as u16).to_be_bytes();
    let mut data = vec![
        0xFF,
        0xD8, // SOI
        0xFF,
        0xE0,
        0x00,
        0x10,
        b'J',
        b'F',
        b'I',
        b'F',
        0x00,
        0x01,
        0x01,
        0x00,
        0x00,
        0x48,
        0x00,
        0x48,
        0x00,
        0x00, // APP0 JFIF 1.1, 72 dpi, no embedded thumbnail
        0xFF,
        0xC0,
        0x00,
        0x11,
        0x08,
        height_high,
        height_low,
        width_high,
        width_low,
        0x03,
        0x01,
        0x22,
        0x00,
        0x02,
        0x11,
        0x01,
        0x03,
        0x11,
        0x01, // SOF0: 8-bit YCbCr 4:2:0
    ];
    let header = data.len();
    data.resize(size, 0);
    dice.fill(&mut data[header..size - 2]);
    data[size - 2..].copy_from_slice(&[0xFF, 0xD9]); // EOI
    data
}
