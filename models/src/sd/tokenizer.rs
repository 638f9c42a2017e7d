//! The CLIP byte-level BPE tokenizer of the Stable Diffusion 1.x/2.x text encoders, as
//! transformers' slow `CLIPTokenizer` (with `ftfy` installed) runs it for diffusers'
//! `encode_prompt`: 77 ids, `<|startoftext|>`, at most 75 tokens, `<|endoftext|>`, padding.
//!
//! It reads a checkpoint's `tokenizer/` folder (`vocab.json`, `merges.txt`, and the pad token
//! from `special_tokens_map.json` or `tokenizer_config.json`). SD 1.5 pads with `<|endoftext|>`
//! (49407); SD 2.1 and SD-Turbo pad with `!` (id 0), and because the pad token is a special
//! token, transformers also splits every literal `!` out of the prompt as id 0. Both are
//! reproduced.
//!
//! Steps: split off special tokens (on the raw text); clean each remaining piece (the parts of
//! `ftfy.fix_text` that apply to prompts: HTML entities, Latin ligatures, full-width forms,
//! curly quotes, control characters, NFC), collapse whitespace, strip, lowercase; split with
//! CLIP's pattern; map UTF-8 bytes to the byte-level alphabet; merge by BPE rank.
//! Not reproduced: ftfy's mojibake repair (`fix_encoding`), which undoes double-encoded UTF-8.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use regex::Regex;
use unicode_normalization::UnicodeNormalization;

use super::{SdError, read_text};

/// The sequence length of every SD text encoder, in tokens (BOS and EOS included).
pub const MAX_LENGTH_TOKENS: usize = 77;
/// The begin-of-text token.
pub const BOS_TOKEN: &str = "<|startoftext|>";
/// The end-of-text token (also SD 1.5's pad and the unknown token).
pub const EOS_TOKEN: &str = "<|endoftext|>";
/// The end-of-word marker the BPE vocabulary appends to a word's last symbol.
const END_OF_WORD: &str = "</w>";
/// CLIP's pre-tokenisation pattern (applied to lowercased text).
const SPLIT_PATTERN: &str =
    r"(?i)<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+";

/// A CLIP tokenizer.
#[derive(Debug)]
pub struct ClipTokenizer {
    vocab: HashMap<String, u32>,
    merge_ranks: HashMap<(String, String), usize>,
    byte_encoder: Vec<char>,
    pattern: Regex,
    /// Special tokens split out of the raw text, longest first.
    specials: Vec<String>,
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
    cache: Mutex<HashMap<String, Vec<String>>>,
}

/// GPT-2's reversible map from bytes to printable characters.
fn bytes_to_unicode() -> Vec<char> {
    let printable = |b: u32| {
        (u32::from(b'!')..=u32::from(b'~')).contains(&b)
            || (0xA1..=0xAC).contains(&b)
            || (0xAE..=0xFF).contains(&b)
    };
    let mut next_free = 256u32;
    (0u32..256)
        .map(|b| {
            let code = if printable(b) {
                b
            } else {
                let code = next_free;
                next_free += 1;
                code
            };
            char::from_u32(code).unwrap_or('\u{FFFD}')
        })
        .collect()
}

impl ClipTokenizer {
    /// Loads a `tokenizer/` folder. The pad token comes from `special_tokens_map.json`, else
    /// `tokenizer_config.json`, else it is `<|endoftext|>`.
    pub fn from_pretrained(dir: &Path) -> Result<Self, SdError> {
        let mut pad = None;
        for name in ["special_tokens_map.json", "tokenizer_config.json"] {
            let path = dir.join(name);
            if pad.is_none() && path.is_file() {
                let text = read_text(&path)?;
                let json: serde_json::Value =
                    serde_json::from_str(&text).map_err(|err| SdError::BadConfig {
                        path: path.clone(),
                        reason: err.to_string(),
                    })?;
                pad = match &json["pad_token"] {
                    serde_json::Value::String(token) => Some(token.clone()),
                    serde_json::Value::Object(token) => token
                        .get("content")
                        .and_then(|c| c.as_str())
                        .map(str::to_owned),
                    _ => None,
                };
            }
        }
        Self::from_files(
            &dir.join("vocab.json"),
            &dir.join("merges.txt"),
            pad.as_deref().unwrap_or(EOS_TOKEN),
        )
    }

    /// Loads `vocab.json` and `merges.txt` with the given pad token (`<|endoftext|>` or `!`).
    pub fn from_files(
        vocab_path: &Path,
        merges_path: &Path,
        pad_token: &str,
    ) -> Result<Self, SdError> {
        let vocab: HashMap<String, u32> =
            serde_json::from_str(&read_text(vocab_path)?).map_err(|err| SdError::Corrupt {
                path: vocab_path.to_path_buf(),
                reason: err.to_string(),
            })?;
        let merges = read_text(merges_path)?;
        let mut merge_ranks = HashMap::new();
        // Line 0 is the `#version` header; transformers reads the first 48894 merges after it
        // (`[1 : 49152 - 256 - 2 + 1]`), which is all of them in SD's merges.txt.
        let max_merges = 49152 - 256 - 2;
        for (rank, line) in merges.trim().lines().skip(1).take(max_merges).enumerate() {
            let mut parts = line.split(' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(first), Some(second), None) => {
                    merge_ranks.insert((first.to_owned(), second.to_owned()), rank);
                }
                _ => {
                    return Err(SdError::Corrupt {
                        path: merges_path.to_path_buf(),
                        reason: format!("merge line {} is `{line}`, not two symbols", rank + 2),
                    });
                }
            }
        }
        let id = |token: &str| {
            vocab.get(token).copied().ok_or_else(|| SdError::Corrupt {
                path: vocab_path.to_path_buf(),
                reason: format!("special token `{token}` is not in the vocabulary"),
            })
        };
        let bos_id = id(BOS_TOKEN)?;
        let eos_id = id(EOS_TOKEN)?;
        let pad_id = id(pad_token)?;
        let mut specials = vec![BOS_TOKEN.to_owned(), EOS_TOKEN.to_owned()];
        if pad_token != BOS_TOKEN && pad_token != EOS_TOKEN {
            specials.push(pad_token.to_owned());
        }
        specials.sort_by_key(|token| std::cmp::Reverse(token.len()));
        let pattern = Regex::new(SPLIT_PATTERN).map_err(|err| SdError::BadConfig {
            path: "<CLIP split pattern>".into(),
            reason: err.to_string(),
        })?;
        Ok(Self {
            vocab,
            merge_ranks,
            byte_encoder: bytes_to_unicode(),
            pattern,
            specials,
            bos_id,
            eos_id,
            pad_id,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The id used for padding.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Entries in the vocabulary (49408 for SD's CLIP tokenizers).
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// The BPE tokens of `text`, without BOS/EOS and without truncation.
    pub fn tokenize(&self, text: &str) -> Vec<String> {
        let mut tokens = Vec::new();
        for piece in self.split_specials(text) {
            match piece {
                Piece::Special(token) => tokens.push(token.to_owned()),
                Piece::Text(text) => {
                    let cleaned = clean_text(text);
                    for word in self.pattern.find_iter(&cleaned) {
                        tokens.extend(self.bpe(word.as_str()));
                    }
                }
            }
        }
        tokens
    }

    /// The ids of `text`'s tokens, without BOS/EOS and without truncation.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.tokenize(text)
            .iter()
            .map(|token| self.vocab.get(token).copied().unwrap_or(self.eos_id))
            .collect()
    }

    /// The 77 ids the text encoder takes: BOS, the first 75 tokens, EOS, then padding.
    pub fn encode_padded(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::with_capacity(MAX_LENGTH_TOKENS);
        ids.push(self.bos_id);
        ids.extend(self.encode(text).into_iter().take(MAX_LENGTH_TOKENS - 2));
        ids.push(self.eos_id);
        ids.resize(MAX_LENGTH_TOKENS, self.pad_id);
        ids
    }

    /// Splits the raw text on the special tokens (leftmost, longest first), as transformers'
    /// added-token trie does before any cleaning.
    fn split_specials<'a>(&'a self, text: &'a str) -> Vec<Piece<'a>> {
        let mut pieces = Vec::new();
        let mut start = 0;
        let mut index = 0;
        while index < text.len() {
            let rest = &text[index..];
            if let Some(token) = self
                .specials
                .iter()
                .find(|token| rest.starts_with(token.as_str()))
            {
                if start < index {
                    pieces.push(Piece::Text(&text[start..index]));
                }
                pieces.push(Piece::Special(token));
                index += token.len();
                start = index;
            } else {
                index += rest.chars().next().map_or(1, char::len_utf8);
            }
        }
        if start < text.len() {
            pieces.push(Piece::Text(&text[start..]));
        }
        pieces
    }

    /// Byte-level BPE of one pre-tokenised word.
    fn bpe(&self, word: &str) -> Vec<String> {
        if word == BOS_TOKEN || word == EOS_TOKEN {
            return vec![word.to_owned()];
        }
        if let Ok(cache) = self.cache.lock()
            && let Some(tokens) = cache.get(word)
        {
            return tokens.clone();
        }
        let mut symbols: Vec<String> = word
            .bytes()
            .map(|b| self.byte_encoder[usize::from(b)].to_string())
            .collect();
        if let Some(last) = symbols.last_mut() {
            last.push_str(END_OF_WORD);
        }
        while symbols.len() > 1 {
            let best = symbols
                .windows(2)
                .filter_map(|pair| {
                    self.merge_ranks
                        .get(&(pair[0].clone(), pair[1].clone()))
                        .map(|rank| (*rank, pair[0].clone(), pair[1].clone()))
                })
                .min_by_key(|(rank, _, _)| *rank);
            let Some((_, first, second)) = best else {
                break;
            };
            let mut merged = Vec::with_capacity(symbols.len());
            let mut i = 0;
            while i < symbols.len() {
                if i + 1 < symbols.len() && symbols[i] == first && symbols[i + 1] == second {
                    merged.push(format!("{first}{second}"));
                    i += 2;
                } else {
                    merged.push(symbols[i].clone());
                    i += 1;
                }
            }
            symbols = merged;
        }
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(word.to_owned(), symbols.clone());
        }
        symbols
    }
}

enum Piece<'a> {
    Special(&'a str),
    Text(&'a str),
}

/// transformers' `whitespace_clean(ftfy.fix_text(text)).lower()`.
pub fn clean_text(text: &str) -> String {
    let fixed = fix_text(text);
    let mut out = String::with_capacity(fixed.len());
    for word in fixed.split(is_python_whitespace).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out.to_lowercase()
}

/// Python's `\s`: Unicode whitespace plus the information separators U+001C..U+001F.
fn is_python_whitespace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// The parts of `ftfy.fix_text` (6.x, default settings) that change prompts.
fn fix_text(text: &str) -> String {
    // ftfy leaves entities alone when the text holds a literal `<` (it may be HTML).
    let text = if text.contains('<') {
        text.to_owned()
    } else {
        unescape_html(text)
    };
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if let Some(expanded) = latin_ligature(c) {
            out.push_str(expanded);
        } else if c == '\u{3000}' {
            // Ideographic space: ftfy's width fix makes it an ASCII space.
            out.push(' ');
        } else if ('\u{FF01}'..='\u{FFEF}').contains(&c) {
            // Half-width and full-width forms: their compatibility (NFKC) form.
            out.extend(c.to_string().nfkc());
        } else if matches!(c, '\u{02BC}' | '\u{2018}'..='\u{201B}') {
            out.push('\'');
        } else if ('\u{201C}'..='\u{201F}').contains(&c) {
            out.push('"');
        } else if is_removed_control(c) {
        } else {
            out.push(c);
        }
    }
    out.nfc().collect()
}

/// ftfy's `fix_latin_ligatures` table.
fn latin_ligature(c: char) -> Option<&'static str> {
    Some(match c {
        'Ĳ' => "IJ",
        'ĳ' => "ij",
        'ŉ' => "ʼn",
        'Ǳ' => "DZ",
        'ǲ' => "Dz",
        'ǳ' => "dz",
        'Ǆ' => "DŽ",
        'ǅ' => "Dž",
        'ǆ' => "dž",
        'Ǉ' => "LJ",
        'ǈ' => "Lj",
        'ǉ' => "lj",
        'Ǌ' => "NJ",
        'ǋ' => "Nj",
        'ǌ' => "nj",
        'ﬀ' => "ff",
        'ﬁ' => "fi",
        'ﬂ' => "fl",
        'ﬃ' => "ffi",
        'ﬄ' => "ffl",
        'ﬅ' => "ſt",
        'ﬆ' => "st",
        _ => return None,
    })
}

/// ftfy's `remove_control_chars`: C0 controls other than tab, line feed, form feed and carriage
/// return; DEL; deprecated format characters; the byte-order mark; interlinear annotations;
/// musical formatting; tag characters.
fn is_removed_control(c: char) -> bool {
    matches!(c,
        '\u{00}'..='\u{08}'
        | '\u{0B}'
        | '\u{0E}'..='\u{1F}'
        | '\u{7F}'
        | '\u{206A}'..='\u{206F}'
        | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFC}'
        | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E007F}')
}

/// Decodes HTML character references: numeric ones and the named entities that occur in
/// prompts. Unknown names stay as written.
fn unescape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let tail = &rest[amp..];
        let end = tail
            .char_indices()
            .skip(1)
            .take(33)
            .find(|(_, c)| *c == ';' || !(c.is_ascii_alphanumeric() || *c == '#'))
            .filter(|(_, c)| *c == ';')
            .map(|(i, _)| i);
        let decoded = end.and_then(|end| decode_entity(&tail[1..end]).map(|c| (c, end)));
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &tail[end + 1..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn decode_entity(name: &str) -> Option<char> {
    if let Some(number) = name.strip_prefix('#') {
        let code = match number.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => number.parse().ok()?,
        };
        return char::from_u32(code).filter(|c| *c != '\0');
    }
    Some(match name {
        "amp" | "AMP" => '&',
        "lt" | "LT" => '<',
        "gt" | "GT" => '>',
        "quot" | "QUOT" => '"',
        "apos" => '\'',
        "nbsp" => '\u{A0}',
        "copy" => '©',
        "reg" => '®',
        "trade" => '™',
        "hellip" => '…',
        "mdash" => '—',
        "ndash" => '–',
        "lsquo" => '‘',
        "rsquo" => '’',
        "ldquo" => '“',
        "rdquo" => '”',
        "deg" => '°',
        "times" => '×',
        "eacute" => 'é',
        "egrave" => 'è',
        "agrave" => 'à',
        "uuml" => 'ü',
        "ouml" => 'ö',
        "auml" => 'ä',
        "szlig" => 'ß',
        "ccedil" => 'ç',
        _ => return None,
    })
}
