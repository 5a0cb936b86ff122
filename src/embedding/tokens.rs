//! The model's contextual state of each word piece of a prompt, before pooling: what the hit
//! verifier aligns between two prompts. Kept beside an entry (in Redis) in a compact form.

/// A word piece that is only punctuation or spacing: it carries no meaning to align.
pub const PUNCT: u8 = 1;
/// A word piece holding a digit or a Chinese numeral: a mismatch there changes the question.
pub const DIGIT: u8 = 2;

/// One state per word piece (the model's special tokens and its `query: ` prefix left out),
/// each L2-normalised, row after row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenStates {
    /// Length of each state.
    pub dim: usize,
    /// `len() * dim` values.
    pub rows: Vec<f32>,
    /// [`PUNCT`] / [`DIGIT`] bits per piece.
    pub flags: Vec<u8>,
}

impl TokenStates {
    /// How many pieces.
    pub fn len(&self) -> usize {
        self.flags.len()
    }

    /// Whether there are none (a prompt of only punctuation, or an entry stored without them).
    pub fn is_empty(&self) -> bool {
        self.flags.is_empty()
    }

    /// The state of piece `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.rows[i * self.dim..(i + 1) * self.dim]
    }

    /// The flags a piece's surface text earns.
    pub fn flags_of(piece: &str) -> u8 {
        let mut flags = 0;
        if piece
            .chars()
            .all(|c| c == '▁' || c.is_whitespace() || c.is_ascii_punctuation() || is_cjk_punct(c))
        {
            flags |= PUNCT;
        }
        if piece
            .chars()
            .any(|c| c.is_ascii_digit() || "零一二三四五六七八九十百千万两半".contains(c))
        {
            flags |= DIGIT;
        }
        flags
    }

    /// Compact bytes: `u16` count, `u16` dim, the flags, then per row an `f32` scale and `dim`
    /// signed bytes (within 1/127 of each value, far below what alignment distinguishes).
    pub fn to_bytes(&self) -> Vec<u8> {
        let n = self.len().min(usize::from(u16::MAX));
        let mut out = Vec::with_capacity(4 + n * (5 + self.dim));
        out.extend_from_slice(&(n as u16).to_le_bytes());
        out.extend_from_slice(&(self.dim.min(usize::from(u16::MAX)) as u16).to_le_bytes());
        out.extend_from_slice(&self.flags[..n]);
        for i in 0..n {
            let row = self.row(i);
            let scale = row
                .iter()
                .fold(0f32, |m, x| m.max(x.abs()))
                .max(f32::EPSILON)
                / 127.0;
            out.extend_from_slice(&scale.to_le_bytes());
            out.extend(row.iter().map(|x| ((x / scale).round() as i8) as u8));
        }
        out
    }

    /// Reads [`Self::to_bytes`]; `None` for bytes of another shape (an entry is then verified
    /// without them).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let n = usize::from(u16::from_le_bytes([*bytes.first()?, *bytes.get(1)?]));
        let dim = usize::from(u16::from_le_bytes([*bytes.get(2)?, *bytes.get(3)?]));
        let flags = bytes.get(4..4 + n)?.to_vec();
        let body = bytes.get(4 + n..)?;
        if dim == 0 || body.len() != n * (4 + dim) {
            return None;
        }
        let mut rows = Vec::with_capacity(n * dim);
        for chunk in body.chunks_exact(4 + dim) {
            let scale = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            rows.extend(chunk[4..].iter().map(|b| f32::from(*b as i8) * scale));
        }
        Some(Self { dim, rows, flags })
    }
}

fn is_cjk_punct(c: char) -> bool {
    ('\u{3000}'..='\u{303f}').contains(&c)
        || ('\u{ff00}'..='\u{ff0f}').contains(&c)
        || ('\u{ff1a}'..='\u{ff20}').contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_within_quantisation() {
        let states = TokenStates {
            dim: 3,
            rows: vec![0.6, -0.8, 0.0, 0.1, 0.2, -0.97],
            flags: vec![0, DIGIT],
        };
        let back = TokenStates::from_bytes(&states.to_bytes()).expect("decodes");
        assert_eq!(back.flags, states.flags);
        for (a, b) in back.rows.iter().zip(&states.rows) {
            assert!((a - b).abs() < 0.01, "{a} vs {b}");
        }
        assert_eq!(TokenStates::from_bytes(&[1, 0, 3]), None);
        assert_eq!(TokenStates::from_bytes(&states.to_bytes()[..9]), None);
    }

    #[test]
    fn pieces_are_flagged() {
        assert_eq!(TokenStates::flags_of("▁?"), PUNCT);
        assert_eq!(TokenStates::flags_of("？"), PUNCT);
        assert_eq!(TokenStates::flags_of("▁500"), DIGIT);
        assert_eq!(TokenStates::flags_of("三"), DIGIT);
        assert_eq!(TokenStates::flags_of("▁refund"), 0);
    }
}
