//! The six tables of the data set and their schemas.

use serde_json::json;

use crate::schema::{FieldSpec, FieldType, TableSchema};

/// One of the generated tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Todos,
    Messages,
    Contacts,
    GpsPoints,
    SensorReadings,
    Thumbnails,
}

impl Kind {
    /// Every table, in the order the data set lists them.
    pub const ALL: [Kind; 6] = [
        Kind::Todos,
        Kind::Messages,
        Kind::Contacts,
        Kind::GpsPoints,
        Kind::SensorReadings,
        Kind::Thumbnails,
    ];

    /// The position in [`Kind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The table name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Todos => "todos",
            Kind::Messages => "messages",
            Kind::Contacts => "contacts",
            Kind::GpsPoints => "gps_points",
            Kind::SensorReadings => "sensor_readings",
            Kind::Thumbnails => "thumbnails",
        }
    }

    /// The share of the data set's JSON bytes this table aims for. Chosen so that
    /// thumbnails are about a fifth of the bytes but ~1.3 % of the records, and the
    /// whole set averages about 300 bytes of JSON per record.
    pub fn byte_share(self) -> f64 {
        match self {
            Kind::Todos => 0.27,
            Kind::Messages => 0.29,
            Kind::Contacts => 0.07,
            Kind::GpsPoints => 0.10,
            Kind::SensorReadings => 0.05,
            Kind::Thumbnails => 0.22,
        }
    }

    /// The table's schema.
    pub fn schema(self) -> TableSchema {
        match self {
            Kind::Todos => todos(),
            Kind::Messages => messages(),
            Kind::Contacts => contacts(),
            Kind::GpsPoints => gps_points(),
            Kind::SensorReadings => sensor_readings(),
            Kind::Thumbnails => thumbnails(),
        }
    }
}

fn required(name: &str, kind: FieldType) -> FieldSpec {
    FieldSpec::new(name, kind).required()
}

fn optional(name: &str, kind: FieldType) -> FieldSpec {
    FieldSpec::new(name, kind)
}

fn todos() -> TableSchema {
    TableSchema::new("todos", "id")
        .field(required("owner", FieldType::String))
        .field(required("title", FieldType::String))
        .field(optional("notes", FieldType::String))
        .field(required("done", FieldType::Boolean).with_default(json!(false)))
        .field(required("priority", FieldType::Integer).with_default(json!(0)))
        .field(optional("due", FieldType::Timestamp))
        .field(optional("tags", FieldType::Json).with_default(json!([])))
        .field(required("created_at", FieldType::Timestamp))
        .field(required("updated_at", FieldType::Timestamp))
        .index("owner")
        .index("due")
        .index("updated_at")
}

fn messages() -> TableSchema {
    TableSchema::new("messages", "id")
        .field(required("conversation", FieldType::String))
        .field(required("sender", FieldType::String))
        .field(required("body", FieldType::String))
        .field(required("sent_at", FieldType::Timestamp))
        .field(required("edited", FieldType::Boolean).with_default(json!(false)))
        .field(required("reactions", FieldType::Counter).with_default(json!(0)))
        .index("conversation")
        .index("sender")
        .index("sent_at")
}

fn contacts() -> TableSchema {
    TableSchema::new("contacts", "id")
        .field(required("owner", FieldType::String))
        .field(required("name", FieldType::String))
        .field(optional("email", FieldType::String))
        .field(optional("phone", FieldType::String))
        .field(optional("company", FieldType::String))
        .field(required("favourite", FieldType::Boolean).with_default(json!(false)))
        .field(required("updated_at", FieldType::Timestamp))
        .index("owner")
        .index("email")
        .index("updated_at")
}

fn gps_points() -> TableSchema {
    TableSchema::new("gps_points", "id")
        .field(required("track", FieldType::String))
        .field(required("seq", FieldType::Integer))
        .field(required("lat", FieldType::Float))
        .field(required("lon", FieldType::Float))
        .field(optional("altitude", FieldType::Float))
        .field(optional("accuracy", FieldType::Float))
        .field(optional("speed", FieldType::Float))
        .field(required("recorded_at", FieldType::Timestamp))
        .index("track")
        .index("recorded_at")
}

fn sensor_readings() -> TableSchema {
    TableSchema::new("sensor_readings", "id")
        .field(required("device", FieldType::String))
        .field(required("kind", FieldType::String))
        .field(required("value", FieldType::Float))
        .field(required("unit", FieldType::String))
        .field(required("recorded_at", FieldType::Timestamp))
        .index("device")
        .index("kind")
        .index("recorded_at")
}

fn thumbnails() -> TableSchema {
    TableSchema::new("thumbnails", "id")
        .field(required("owner", FieldType::String))
        .field(required("record_ref", FieldType::String))
        .field(required("mime", FieldType::String).with_default(json!("image/jpeg")))
        .field(required("width", FieldType::Integer))
        .field(required("height", FieldType::Integer))
        .field(required("data", FieldType::Bytes))
        .field(optional("taken_at", FieldType::Timestamp))
        .index("owner")
        .index("record_ref")
}
