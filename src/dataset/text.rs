//! Text for generated records: todo titles and notes, chat messages, names,
//! e-mail addresses and phone numbers.

use super::dice::Dice;
use super::words;

/// Appends `template` to `out` with every `{placeholder}` filled in from the
/// vocabularies. Unknown placeholders are copied as they are.
pub fn expand(dice: &mut Dice, template: &str, out: &mut String) {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let name = &rest[open + 1..open + close];
        if !fill_placeholder(dice, name, out) {
            out.push_str(&rest[open..=open + close]);
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
}

/// Writes one value for `name`; false for an unknown placeholder.
fn fill_placeholder(dice: &mut Dice, name: &str, out: &mut String) -> bool {
    let list = match name {
        "name" => words::FIRST_NAMES,
        "place" => words::PLACES,
        "spot" => words::SPOTS,
        "noun" => words::NOUNS,
        "adj" => words::ADJECTIVES,
        "verb" => words::VERBS,
        "time" => words::TIMES,
        "weekday" => words::WEEKDAYS,
        "num" => {
            out.push_str(&dice.int(2, 250).to_string());
            return true;
        }
        "digit" => {
            out.push_str(&dice.int(2, 9).to_string());
            return true;
        }
        "clock" => {
            push_clock(dice, out);
            return true;
        }
        _ => return false,
    };
    out.push_str(dice.pick(list));
    true
}

/// A time of day the way people type it: "7:30", "10am", "noon", "18:45".
fn push_clock(dice: &mut Dice, out: &mut String) {
    let hour = dice.int(7, 22);
    let minute = dice.pick(&[0, 0, 15, 30, 30, 45]);
    match dice.below(4) {
        0 => out.push_str("noon"),
        1 => out.push_str(&format!(
            "{}{}",
            (hour - 1) % 12 + 1,
            if hour < 12 { "am" } else { "pm" }
        )),
        _ => out.push_str(&format!("{hour}:{minute:02}")),
    }
}

/// A todo title: "Book flights to Lisbon", "Call the dentist tomorrow".
pub fn todo_title(dice: &mut Dice) -> String {
    let (verbs, objects) = dice.pick(words::TODO_TASKS);
    let mut title = String::with_capacity(48);
    title.push_str(dice.pick(verbs));
    title.push(' ');
    expand_one(dice, objects, &mut title);
    if dice.chance(0.3) {
        expand_one(dice, words::TODO_SUFFIXES, &mut title);
    }
    title
}

/// Appends one template of `templates`, expanded.
fn expand_one(dice: &mut Dice, templates: &[&str], out: &mut String) {
    let template = dice.pick(templates);
    expand(dice, template, out);
}

/// Notes on a todo: one to four short sentences, sometimes on separate lines.
pub fn todo_note(dice: &mut Dice) -> String {
    let sentences = 1 + dice.skewed(4);
    let mut note = String::with_capacity(48 * sentences);
    for index in 0..sentences {
        if index > 0 {
            note.push_str(if dice.chance(0.3) { "\n" } else { " " });
        }
        expand_one(dice, words::NOTE_TEMPLATES, &mut note);
    }
    note
}

/// A chat message body. Lengths vary like real chats: many one-word replies, most
/// messages a sentence or two, and a few long paragraphs; some carry emoji or are
/// in another language.
pub fn message_body(dice: &mut Dice) -> String {
    let sentences = match dice.below(100) {
        0..=19 => return short_reply(dice),
        20..=24 => return dice.pick(words::FOREIGN_PHRASES).to_string(),
        25..=64 => 1,
        65..=84 => dice.int(2, 3) as usize,
        _ => dice.int(4, 12) as usize,
    };
    let mut body = String::with_capacity(40 * sentences);
    for index in 0..sentences {
        if index > 0 {
            end_sentence(dice, &mut body);
            body.push_str(if dice.chance(0.15) { "\n" } else { " " });
        }
        chat_sentence(dice, &mut body);
    }
    body
}

/// Ends a sentence that is followed by another with a full stop or an exclamation
/// mark, unless it already ends in punctuation or an emoji.
fn end_sentence(dice: &mut Dice, body: &mut String) {
    if body.ends_with(|character: char| character.is_alphanumeric()) {
        body.push(if dice.chance(0.8) { '.' } else { '!' });
    }
}

/// A one-word or one-emoji reply.
fn short_reply(dice: &mut Dice) -> String {
    let mut reply = dice.pick(words::SHORT_REPLIES).to_string();
    if dice.chance(0.15) {
        reply.push(' ');
        reply.push_str(dice.pick(words::EMOJI));
    }
    reply
}

/// One chat sentence, capitalised or not (people type both), sometimes with an
/// emoji or a phrase in another language after it.
fn chat_sentence(dice: &mut Dice, out: &mut String) {
    let start = out.len();
    expand_one(dice, words::CHAT_TEMPLATES, out);
    if dice.chance(0.5) {
        capitalise_from(out, start);
    }
    match dice.below(10) {
        0 | 1 => {
            out.push(' ');
            out.push_str(dice.pick(words::EMOJI));
        }
        2 => {
            out.push(' ');
            out.push_str(dice.pick(words::FOREIGN_PHRASES));
        }
        _ => {}
    }
}

/// Upper-cases the first character at or after byte `start` if it is ASCII.
fn capitalise_from(text: &mut str, start: usize) {
    if let Some(first) = text.get_mut(start..start + 1) {
        first.make_ascii_uppercase();
    }
}

/// A person's display name, "First Last".
pub fn person_name(dice: &mut Dice) -> (&'static str, &'static str) {
    (dice.pick(words::FIRST_NAMES), dice.pick(words::LAST_NAMES))
}

/// An e-mail address derived from a name, in one of the usual patterns. `last`
/// may be empty (a contact saved by first name only).
pub fn email(dice: &mut Dice, first: &str, last: &str) -> String {
    let (mut first, last) = (ascii_fold(first), ascii_fold(last));
    if first.is_empty() {
        first.push_str("user");
    }
    let domain = dice.pick(words::EMAIL_DOMAINS);
    let initial = &first[..1];
    match dice.below(5) {
        _ if last.is_empty() => format!("{first}{}@{domain}", dice.int(1, 999)),
        0 => format!("{first}.{last}@{domain}"),
        1 => format!("{first}{last}{}@{domain}", dice.int(1, 99)),
        2 => format!("{initial}{last}@{domain}"),
        3 => format!("{first}_{last}@{domain}"),
        _ => format!("{first}{}@{domain}", dice.int(70, 2005)),
    }
}

/// Lower-case ASCII for a name: common diacritics lose their marks and anything
/// else that cannot appear in an address is dropped (possibly leaving nothing).
fn ascii_fold(name: &str) -> String {
    let mut folded = String::with_capacity(name.len());
    for character in name.chars().flat_map(char::to_lowercase) {
        let plain = match character {
            'a'..='z' | '0'..='9' => character,
            'á' | 'à' | 'â' | 'ä' | 'ã' | 'å' => 'a',
            'é' | 'è' | 'ê' | 'ë' => 'e',
            'í' | 'ì' | 'î' | 'ï' => 'i',
            'ó' | 'ò' | 'ô' | 'ö' | 'õ' | 'ø' => 'o',
            'ú' | 'ù' | 'û' | 'ü' => 'u',
            'ç' | 'ć' => 'c',
            'ñ' | 'ń' => 'n',
            'ł' => 'l',
            'ś' | 'š' => 's',
            'ß' => {
                folded.push_str("ss");
                continue;
            }
            _ => continue,
        };
        folded.push(plain);
    }
    folded
}

/// A phone number in one of several national formats.
pub fn phone(dice: &mut Dice) -> String {
    let layout = dice.pick(words::PHONE_FORMATS);
    layout
        .chars()
        .map(|character| match character {
            '#' => char::from(b'0' + dice.below(10) as u8),
            other => other,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_all_filled() {
        let mut dice = Dice::new(3);
        for _ in 0..500 {
            for text in [
                todo_title(&mut dice),
                todo_note(&mut dice),
                message_body(&mut dice),
            ] {
                assert!(!text.is_empty());
                assert!(!text.contains('{') && !text.contains('}'), "{text}");
            }
        }
    }

    #[test]
    fn emails_are_ascii() {
        let mut dice = Dice::new(4);
        for _ in 0..500 {
            let (first, last) = person_name(&mut dice);
            let address = email(&mut dice, first, last);
            assert!(address.is_ascii() && address.contains('@'), "{address}");
            assert!(!address.starts_with('@'), "{address}");
        }
        assert_eq!(ascii_fold("Łukasz"), "lukasz");
        assert_eq!(ascii_fold("O'Brien"), "obrien");
        assert!(email(&mut dice, "Zoë", "").starts_with("zoe"));
        assert!(email(&mut dice, "太郎", "").starts_with("user"));
    }

    #[test]
    fn phones_have_digits_only_where_the_layout_says() {
        let mut dice = Dice::new(5);
        let number = phone(&mut dice);
        assert!(!number.contains('#'));
        assert!(number.chars().any(|character| character.is_ascii_digit()));
    }
}
