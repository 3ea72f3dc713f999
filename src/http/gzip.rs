//! The gzip format (RFC 1952) around miniz_oxide's raw deflate: a ten-byte header, the deflate
//! stream, and a trailer of the CRC-32 and the length, the CRC computed here.
//!
//! A compressor holds about 300 KB of tables, 64 KB of them inline, which a coroutine's 128 KiB
//! stack cannot take as a temporary: compressors are made on a stack of their own (a short-lived
//! coroutine with a large stack, or the calling plain thread) and kept in a small pool, so a
//! small body does not pay for 300 KB of zeroed memory either.

use super::response::{More, Producer};
use miniz_oxide::deflate::core::{
    compress_to_output, create_comp_flags_from_zip_params, CompressorOxide, TDEFLFlush, TDEFLStatus,
};
use std::sync::Mutex;

/// Deflate level 1 (the fastest, greedy matching): it already makes registry listings 7 to 16
/// times smaller, at about 170-190 MB/s of input on the development machine (README,
/// Performance); higher levels were not measured.
const LEVEL: i32 = 1;
/// Input deflated between two yields of the calling coroutine, so one large body does not hold
/// its worker while other connections wait.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Compressors kept for reuse; more are made when more bodies are compressed at once.
const POOLED_COMPRESSORS: usize = 2;
/// The stack of the coroutine that makes a compressor: room for it as a temporary, twice.
const MAKER_STACK_BYTES: usize = 1024 * 1024;

/// Header: magic, deflate, no flags, no modification time, "fastest" (XFL 4), OS unknown.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 255];

static POOL: Mutex<Vec<Box<CompressorOxide>>> = Mutex::new(Vec::new());

/// `plain` as one gzip member. `between_chunks` runs after every [`CHUNK_BYTES`] of input (a
/// coroutine yields there).
pub fn compress(plain: &[u8], between_chunks: &mut dyn FnMut()) -> Vec<u8> {
    // Listings compress about tenfold.
    let mut out = Vec::with_capacity(HEADER.len() + plain.len() / 8 + 64);
    let mut member = Member::new(&mut out);
    let mut chunks = plain.chunks(CHUNK_BYTES).peekable();
    while let Some(chunk) = chunks.next() {
        member.write(chunk, &mut out);
        if chunks.peek().is_some() {
            between_chunks();
        }
    }
    member.finish(&mut out);
    out
}

/// One gzip member written piece by piece: the header when it is made, deflated input as it
/// comes, the trailer at [`Member::finish`]. Its compressor goes back to the pool when it is
/// dropped, finished or not.
pub struct Member {
    compressor: Option<Box<CompressorOxide>>,
    crc: Crc32,
    /// The input length so far, modulo 2^32 as ISIZE has it.
    length: u32,
}

impl Member {
    /// A member whose header is appended to `out`.
    pub fn new(out: &mut Vec<u8>) -> Member {
        out.extend_from_slice(&HEADER);
        Member {
            compressor: Some(take_compressor()),
            crc: Crc32::new(),
            length: 0,
        }
    }

    /// Deflates `plain` (at most [`CHUNK_BYTES`] at a time is what keeps a call short) and
    /// appends what the compressor gives out, which may be nothing yet.
    pub fn write(&mut self, plain: &[u8], out: &mut Vec<u8>) {
        self.crc.update(plain);
        self.length = self.length.wrapping_add(plain.len() as u32);
        self.deflate(plain, TDEFLFlush::None, out);
    }

    /// Ends the deflate stream and appends the trailer: the CRC-32 and ISIZE.
    pub fn finish(mut self, out: &mut Vec<u8>) {
        self.deflate(&[], TDEFLFlush::Finish, out);
        out.extend_from_slice(&self.crc.finish().to_le_bytes());
        out.extend_from_slice(&self.length.to_le_bytes());
    }

    fn deflate(&mut self, plain: &[u8], flush: TDEFLFlush, out: &mut Vec<u8>) {
        let Some(compressor) = self.compressor.as_mut() else {
            return;
        };
        let (status, _) = compress_to_output(compressor, plain, flush, |bytes| {
            out.extend_from_slice(bytes);
            true
        });
        // The output callback never refuses, so the compressor consumes all of its input; it
        // fails only on bad parameters, which these are not.
        debug_assert!(matches!(status, TDEFLStatus::Okay | TDEFLStatus::Done));
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(compressor) = self.compressor.take() {
            give_back(compressor);
        }
    }
}

/// A streamed body gzip-compressed as it is made: each call takes up to [`CHUNK_BYTES`] of the
/// plain body and gives out what the compressor makes of it.
pub struct GzipProducer {
    plain: Box<dyn Producer>,
    /// `None` once finished.
    member: Option<Member>,
    /// Scratch room for the plain piece, kept between calls.
    piece: Vec<u8>,
    started: bool,
}

impl GzipProducer {
    pub fn new(plain: Box<dyn Producer>) -> GzipProducer {
        GzipProducer {
            plain,
            member: None,
            piece: Vec::new(),
            started: false,
        }
    }
}

impl Producer for GzipProducer {
    /// One piece of plain input a call, whatever `out` holds: the work per call stays bounded
    /// whatever the compression ratio.
    fn produce(&mut self, out: &mut Vec<u8>, _fill_to: usize) -> More {
        if !self.started {
            self.started = true;
            self.member = Some(Member::new(out));
        }
        let Some(member) = self.member.as_mut() else {
            return More::Done;
        };
        self.piece.clear();
        let more = self.plain.produce(&mut self.piece, CHUNK_BYTES);
        member.write(&self.piece, out);
        if more == More::Done {
            if let Some(member) = self.member.take() {
                member.finish(out);
            }
            self.piece = Vec::new();
        }
        more
    }
}

fn take_compressor() -> Box<CompressorOxide> {
    let pooled = POOL.lock().unwrap_or_else(|e| e.into_inner()).pop();
    match pooled {
        Some(mut compressor) => {
            compressor.reset();
            compressor
        }
        None => make_compressor(),
    }
}

fn give_back(compressor: Box<CompressorOxide>) {
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if pool.len() < POOLED_COMPRESSORS {
        pool.push(compressor);
    }
}

/// A raw-deflate compressor at [`LEVEL`], made where a 64 KB temporary fits.
fn make_compressor() -> Box<CompressorOxide> {
    fn make() -> Box<CompressorOxide> {
        // Raw deflate: no zlib wrapper (window bits 0 means raw), default strategy.
        let flags = create_comp_flags_from_zip_params(LEVEL, 0, 0);
        Box::new(CompressorOxide::new(flags))
    }
    if !may::coroutine::is_coroutine() {
        return make();
    }
    // SAFETY (may's requirement for spawning): the closure uses no thread-local state.
    let maker = unsafe {
        may::coroutine::Builder::new()
            .name("gzip-compressor".into())
            .stack_size(MAKER_STACK_BYTES)
            .spawn(make)
    };
    // Joining parks this coroutine only. Making a compressor cannot fail but by running out of
    // memory, which aborts the process anyway.
    match maker.map(|handle| handle.join()) {
        Ok(Ok(compressor)) => compressor,
        _ => std::process::abort(),
    }
}

/// CRC-32 (ISO-HDLC, the polynomial of gzip and zlib), reflected, a byte at a time.
struct Crc32(u32);

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut n = 0;
    while n < 256 {
        let mut c = n as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[n] = c;
        n += 1;
    }
    table
};

impl Crc32 {
    fn new() -> Crc32 {
        Crc32(!0)
    }

    fn update(&mut self, bytes: &[u8]) {
        let mut c = self.0;
        for &b in bytes {
            c = CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
        }
        self.0 = c;
    }

    fn finish(&self) -> u32 {
        !self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use miniz_oxide::inflate::decompress_to_vec;

    fn gunzip(member: &[u8]) -> Vec<u8> {
        assert_eq!(&member[..10], &HEADER);
        let (deflated, trailer) = member[10..].split_at(member.len() - 18);
        let plain = decompress_to_vec(deflated).expect("a valid deflate stream");
        let mut crc = Crc32::new();
        crc.update(&plain);
        assert_eq!(trailer[..4], crc.finish().to_le_bytes(), "CRC-32");
        assert_eq!(trailer[4..], (plain.len() as u32).to_le_bytes(), "ISIZE");
        plain
    }

    #[test]
    fn crc32_check_value() {
        let mut crc = Crc32::new();
        crc.update(b"1234");
        crc.update(b"56789");
        assert_eq!(crc.finish(), 0xcbf4_3926);
    }

    #[test]
    fn round_trips_small_and_many_chunk_bodies() {
        let listing: Vec<u8> = (0..40_000)
            .flat_map(|i| format!("{{\"id\":\"instance-{i}\",\"status\":\"UP\"}},").into_bytes())
            .collect();
        assert!(listing.len() > 10 * CHUNK_BYTES);
        let mut yields = 0;
        for plain in [&b"x"[..], &b""[..], &listing[..CHUNK_BYTES], &listing] {
            let member = compress(plain, &mut || yields += 1);
            assert_eq!(gunzip(&member), plain);
        }
        assert_eq!(yields, listing.len() / CHUNK_BYTES);
        let member = compress(&listing, &mut || {});
        assert!(member.len() * 5 < listing.len(), "{}", member.len());
    }

    /// A body made in pieces of `piece` bytes.
    struct Pieces {
        body: Vec<u8>,
        at: usize,
        piece: usize,
    }

    impl Producer for Pieces {
        fn produce(&mut self, out: &mut Vec<u8>, _fill_to: usize) -> More {
            let end = (self.at + self.piece).min(self.body.len());
            out.extend_from_slice(&self.body[self.at..end]);
            self.at = end;
            if end == self.body.len() {
                More::Done
            } else {
                More::Yes
            }
        }
    }

    #[test]
    fn a_streamed_body_is_compressed_as_it_is_made() {
        let body: Vec<u8> = (0..30_000)
            .flat_map(|i| format!("{{\"id\":\"instance-{i}\"}},").into_bytes())
            .collect();
        for (plain, piece) in [
            (&body[..], 1000),
            (&body[..], 3 * CHUNK_BYTES),
            (&b""[..], 1),
        ] {
            let producer = GzipProducer::new(Box::new(Pieces {
                body: plain.to_vec(),
                at: 0,
                piece,
            }));
            let member = crate::http::response::Streamed(Box::new(producer)).collect(100);
            assert_eq!(gunzip(&member), plain);
        }
    }

    #[test]
    fn a_compressor_is_made_and_used_on_a_coroutine_stack() {
        // Empty the pool so that this coroutine must make one.
        POOL.lock().unwrap().clear();
        let plain = b"registry ".repeat(50_000);
        // The server's coroutine stack (main.rs: 16 Ki words).
        let compressed = unsafe {
            may::coroutine::Builder::new()
                .stack_size(128 * 1024)
                .spawn(move || compress(&plain, &mut may::coroutine::yield_now))
        }
        .unwrap()
        .join()
        .unwrap();
        assert_eq!(gunzip(&compressed), b"registry ".repeat(50_000));
    }
}
