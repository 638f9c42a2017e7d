//! The engine as a live [`FrameStage`]: frames in, restyled frames out, with live control.
//!
//! **Timing.** Stream Batch emits a frame `len(t_index_list) - 1` calls after it went in. Through
//! [`FrameStage::process_aligned`] (what the runner uses) every output carries the timing of the
//! input it came from: nothing comes out while the batch fills, and [`FrameStage::finish`] pushes
//! the frames still in flight out at the end (by feeding the last input again). So every input
//! gives exactly one output, in order, and capture-to-output latency includes the pipeline delay.
//! A frame the similarity filter skips is answered with the previous output, in its turn.
//!
//! **Live control.** [`EngineSettings`] behind a mutex, read once per frame. Prompts are encoded
//! on a worker thread (off the hot path) and the embeddings are swapped in at a frame boundary,
//! so no frame waits for the text encoder. Guidance, delta and the SSF settings apply at the next
//! frame. A `t_index_list` of the same length and a new seed apply at the next frame with the
//! frames in flight carrying on; a new length, or a new frame size, first flushes the frames in
//! flight (no frame is lost) and then reallocates the buffers.

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use burn::tensor::{Tensor, TensorData};
use streamdiff_models::device::ComputeDevice;
use streamdiff_models::image::tensor_to_rgb;

use super::ssf::{SimilarityFilter, SsfCounters};
use super::stream_batch::{CfgType, Guidance, PromptEmbeds};
use super::{PromptEncoder, StreamEngine};
use crate::PipelineError;
use crate::stage::FrameStage;
use crate::stage::frame::VideoFrame;

/// Settings that may change while frames flow.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineSettings {
    /// The prompt.
    pub prompt: String,
    /// The negative prompt (used by `full` and `initialize` guidance).
    pub negative_prompt: String,
    /// `guidance_scale`.
    pub guidance_scale: f32,
    /// RCFG `delta`.
    pub delta: f32,
    /// The RCFG variant.
    pub cfg_type: CfgType,
    /// Indices into the 50-step LCM schedule.
    pub t_index_list: Vec<usize>,
    /// Seed of the fixed noise.
    pub seed: u64,
    /// Similarity filter threshold; `None` turns the filter off.
    pub ssf_threshold: Option<f64>,
    /// The filter's skip cap (StreamDiffusion's `max_skip_frame`).
    pub ssf_max_skip_frames: u32,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            negative_prompt: String::new(),
            guidance_scale: 1.2,
            delta: 1.0,
            cfg_type: CfgType::SelfNegative,
            t_index_list: vec![32, 45],
            seed: 2,
            ssf_threshold: None,
            ssf_max_skip_frames: 10,
        }
    }
}

impl EngineSettings {
    fn guidance(&self) -> Guidance {
        Guidance {
            cfg_type: self.cfg_type,
            scale: self.guidance_scale,
            delta: self.delta,
        }
    }
}

/// What the engine stage did, for summaries and tests.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct EngineStats {
    /// Frames given to the stage.
    pub frames_in: u64,
    /// Frames it returned.
    pub frames_out: u64,
    /// Stream-batch calls (one UNet evaluation each), flushes included.
    pub unet_calls: u64,
    /// UNet rows of the last call.
    pub unet_rows: usize,
    /// Pipeline delay in frames, `len(t_index_list) - 1`.
    pub delay_frames: usize,
    /// Prompt embeddings swapped in.
    pub prompt_swaps: u64,
    /// Calls spent pushing frames in flight out (end of input, size or schedule change).
    pub flush_calls: u64,
    /// Stream buffers (re)allocated for a frame size or schedule length.
    pub reallocations: u64,
    /// The similarity filter.
    pub ssf: SsfCounters,
}

/// The prompt worker: encodes prompt pairs on its own thread.
struct PromptWorker {
    requests: Option<SyncSender<(u64, String, String)>>,
    results: Receiver<(u64, PromptEmbeds)>,
    thread: Option<JoinHandle<()>>,
}

impl PromptWorker {
    fn start(encoder: PromptEncoder) -> Result<Self, PipelineError> {
        // Bounded both ways; a newer request supersedes older ones (see `latest`).
        let (request_tx, request_rx) = sync_channel::<(u64, String, String)>(4);
        let (result_tx, result_rx) = sync_channel::<(u64, PromptEmbeds)>(4);
        let thread = std::thread::Builder::new()
            .name("prompt-encoder".into())
            .spawn(move || {
                // Ends when the stage drops the request sender.
                while let Ok(mut request) = request_rx.recv() {
                    while let Ok(newer) = request_rx.try_recv() {
                        request = newer;
                    }
                    let (generation, prompt, negative) = request;
                    let embeds = encoder.encode_pair(&prompt, &negative);
                    if result_tx.send((generation, embeds)).is_err() {
                        break;
                    }
                }
            })
            .map_err(|err| PipelineError::Engine(format!("cannot start a thread: {err}")))?;
        Ok(Self {
            requests: Some(request_tx),
            results: result_rx,
            thread: Some(thread),
        })
    }

    fn request(&self, generation: u64, prompt: &str, negative: &str) -> Result<(), PipelineError> {
        let sender = self
            .requests
            .as_ref()
            .ok_or_else(|| PipelineError::Engine("the prompt encoder has stopped".into()))?;
        sender
            .send((generation, prompt.to_owned(), negative.to_owned()))
            .map_err(|_| PipelineError::Engine("the prompt encoder has stopped".into()))
    }
}

impl Drop for PromptWorker {
    fn drop(&mut self) {
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// How a stream-batch call is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    /// A new input that waits in `pending` for its output.
    Enter,
    /// The last input fed again to push the frames in flight out.
    Flush,
    /// StreamDiffusion's way: the output of this call, whoever it belongs to.
    Unaligned,
}

/// One input waiting for its output, in input order.
struct Pending {
    frame: VideoFrame,
    /// Skipped by the similarity filter: answered with the previous output.
    skipped: bool,
    /// The stream-batch call the frame entered at (counted since the batch was allocated).
    entered_call: u64,
    /// The restyled pixels, once the stream batch has emitted them.
    rgb: Option<Vec<u8>>,
}

/// The engine stage.
pub struct EngineStage {
    engine: StreamEngine,
    compute: ComputeDevice,
    settings: Arc<Mutex<EngineSettings>>,
    applied: EngineSettings,
    worker: PromptWorker,
    prompt_generation: u64,
    ready_prompt: Option<(u64, PromptEmbeds)>,
    ssf: SimilarityFilter,
    stats: Arc<Mutex<EngineStats>>,
    pending: VecDeque<Pending>,
    /// Stream-batch calls since the batch was allocated.
    calls: u64,
    /// The last input that entered the batch (fed again to flush).
    last_input: Option<VideoFrame>,
    last_output: Option<Vec<u8>>,
}

impl EngineStage {
    /// A stage over `engine`, with `prompts` moved to the prompt worker; `settings` are the
    /// starting values (the engine's embeddings must be those of its prompt pair).
    pub fn new(
        engine: StreamEngine,
        prompts: PromptEncoder,
        compute: ComputeDevice,
        settings: EngineSettings,
    ) -> Result<Self, PipelineError> {
        let ssf = SimilarityFilter::new(
            settings.ssf_threshold.unwrap_or(1.0),
            settings.ssf_max_skip_frames,
            settings.seed,
        );
        let mut stage = Self {
            engine,
            compute,
            settings: Arc::new(Mutex::new(settings.clone())),
            applied: settings,
            worker: PromptWorker::start(prompts)?,
            prompt_generation: 0,
            ready_prompt: None,
            ssf,
            stats: Arc::new(Mutex::new(EngineStats::default())),
            pending: VecDeque::new(),
            calls: 0,
            last_input: None,
            last_output: None,
        };
        let guidance = stage.applied.guidance();
        stage.engine.set_guidance(guidance);
        stage.engine.set_t_index_list(&stage.applied.t_index_list)?;
        stage.engine.set_seed(stage.applied.seed);
        stage.update_stats(|stats| stats.delay_frames = stage.engine.delay_calls());
        Ok(stage)
    }

    /// A handle to change the settings live.
    pub fn settings(&self) -> Arc<Mutex<EngineSettings>> {
        self.settings.clone()
    }

    /// A handle to the counters.
    pub fn stats(&self) -> Arc<Mutex<EngineStats>> {
        self.stats.clone()
    }

    /// The engine.
    pub fn engine(&self) -> &StreamEngine {
        &self.engine
    }

    /// Waits (up to `timeout`) until embeddings for the latest prompt are ready to be swapped
    /// in at the next frame. Returns whether they are. For tests and tools that need to know
    /// when a change lands; the stage itself never waits.
    pub fn wait_for_prompt(&mut self, timeout: Duration) -> Result<bool, PipelineError> {
        self.request_prompt_if_changed()?;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if self
                .ready_prompt
                .as_ref()
                .is_some_and(|(generation, _)| *generation == self.prompt_generation)
            {
                return Ok(true);
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.worker.results.recv_timeout(left) {
                Ok(result) => self.ready_prompt = Some(result),
                Err(RecvTimeoutError::Timeout) => return Ok(false),
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(PipelineError::Engine(
                        "the prompt encoder has stopped".into(),
                    ));
                }
            }
        }
    }

    fn update_stats(&self, change: impl FnOnce(&mut EngineStats)) {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        change(&mut stats);
    }

    fn current_settings(&self) -> EngineSettings {
        self.settings
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Asks the worker for new embeddings when the prompt pair changed.
    fn request_prompt_if_changed(&mut self) -> Result<(), PipelineError> {
        let wanted = self.current_settings();
        if wanted.prompt != self.applied.prompt
            || wanted.negative_prompt != self.applied.negative_prompt
        {
            self.prompt_generation += 1;
            self.worker.request(
                self.prompt_generation,
                &wanted.prompt,
                &wanted.negative_prompt,
            )?;
            self.applied.prompt = wanted.prompt;
            self.applied.negative_prompt = wanted.negative_prompt;
        }
        Ok(())
    }

    /// Applies changed settings at a frame boundary, for a frame of `height_px` x `width_px`.
    fn apply_settings(&mut self, height_px: usize, width_px: usize) -> Result<(), PipelineError> {
        self.request_prompt_if_changed()?;
        loop {
            match self.worker.results.try_recv() {
                Ok(result) => self.ready_prompt = Some(result),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    return Err(PipelineError::Engine(
                        "the prompt encoder has stopped".into(),
                    ));
                }
            }
        }
        if let Some((generation, embeds)) = self.ready_prompt.take() {
            // Older results than the latest request are superseded.
            if generation == self.prompt_generation {
                self.engine.set_prompt(embeds);
                self.update_stats(|stats| stats.prompt_swaps += 1);
            }
        }

        let wanted = self.current_settings();
        self.engine.set_guidance(wanted.guidance());
        self.applied.guidance_scale = wanted.guidance_scale;
        self.applied.delta = wanted.delta;
        self.applied.cfg_type = wanted.cfg_type;
        if wanted.ssf_threshold != self.applied.ssf_threshold {
            self.ssf.set_threshold(wanted.ssf_threshold.unwrap_or(1.0));
            self.applied.ssf_threshold = wanted.ssf_threshold;
        }
        self.ssf.set_max_skip_frames(wanted.ssf_max_skip_frames);
        self.applied.ssf_max_skip_frames = wanted.ssf_max_skip_frames;

        let new_length = wanted.t_index_list.len() != self.applied.t_index_list.len();
        let new_size = self
            .last_input
            .as_ref()
            .is_some_and(|last| (last.height_px, last.width_px) != (height_px, width_px));
        if new_length || new_size {
            self.flush()?;
        }
        if wanted.t_index_list != self.applied.t_index_list {
            self.engine.set_t_index_list(&wanted.t_index_list)?;
            self.applied.t_index_list = wanted.t_index_list;
            let delay = self.engine.delay_calls();
            self.update_stats(|stats| stats.delay_frames = delay);
        }
        if wanted.seed != self.applied.seed {
            self.engine.set_seed(wanted.seed);
            self.applied.seed = wanted.seed;
        }
        if new_size {
            self.engine.reset();
            self.ssf.reset();
        }
        Ok(())
    }

    /// Whether a processed input is still waiting for the stream batch.
    fn in_flight(&self) -> bool {
        self.pending.iter().any(|p| !p.skipped && p.rgb.is_none())
    }

    /// Runs one stream-batch call on `frame` and hands its output to the input that entered
    /// `len(t_index_list) - 1` calls ago, if there is one (during the fill there is none, and
    /// the output is not even decoded). Returns the decoded output for [`Call::Unaligned`].
    fn run_engine(
        &mut self,
        frame: VideoFrame,
        mode: Call,
    ) -> Result<Option<Vec<u8>>, PipelineError> {
        let device = self.engine.device().clone();
        let values: Vec<f32> = frame
            .rgb
            .iter()
            .map(|&v| f32::from(v) / 255.0 * 2.0 - 1.0)
            .collect();
        let image = Tensor::<4>::from_data(
            TensorData::new(values, [1, frame.height_px, frame.width_px, 3]),
            &device,
        )
        .permute([0, 3, 1, 2]);
        if self.engine.prepare(frame.height_px, frame.width_px)? {
            self.calls = 0;
            self.update_stats(|stats| stats.reallocations += 1);
        }
        let call = self.calls;
        self.calls += 1;
        let delay = self.engine.delay_calls() as u64;
        if mode != Call::Flush {
            self.last_input = Some(frame.clone());
        }
        if mode == Call::Enter {
            self.pending.push_back(Pending {
                frame,
                skipped: false,
                entered_call: call,
                rgb: None,
            });
        }
        let latents = self.engine.encode(image);
        let x_t = self.engine.noised(latents)?;
        let x0 = self.engine.denoise(x_t)?;
        let rows = self.engine.unet_rows();
        self.update_stats(|stats| {
            stats.unet_calls += 1;
            stats.unet_rows = rows;
        });
        let owner = call.checked_sub(delay).and_then(|owner| {
            self.pending
                .iter()
                .position(|p| !p.skipped && p.rgb.is_none() && p.entered_call == owner)
        });
        if owner.is_none() && mode != Call::Unaligned {
            return Ok(None);
        }
        let images = self.engine.decode(x0);
        let rgb = tensor_to_rgb((images + 1.0) / 2.0)?;
        match owner {
            Some(index) => {
                self.pending[index].rgb = Some(rgb);
                Ok(None)
            }
            None => Ok(Some(rgb)),
        }
    }

    /// Feeds the last input again until every frame in flight has come out.
    fn flush(&mut self) -> Result<(), PipelineError> {
        let Some(last) = self.last_input.clone() else {
            return Ok(());
        };
        while self.in_flight() {
            self.run_engine(last.clone(), Call::Flush)?;
            self.update_stats(|stats| stats.flush_calls += 1);
        }
        Ok(())
    }

    /// The outputs that are ready, in input order.
    fn ready(&mut self) -> Vec<VideoFrame> {
        let mut out = Vec::new();
        while let Some(front) = self.pending.front() {
            if !front.skipped && front.rgb.is_none() {
                break;
            }
            let Some(mut pending) = self.pending.pop_front() else {
                break;
            };
            let rgb = match (pending.skipped, pending.rgb.take()) {
                (false, Some(rgb)) => rgb,
                // A skip re-emits the previous output (its own input if there is none yet).
                _ => self
                    .last_output
                    .clone()
                    .unwrap_or_else(|| std::mem::take(&mut pending.frame.rgb)),
            };
            self.last_output = Some(rgb.clone());
            pending.frame.rgb = rgb;
            out.push(pending.frame);
        }
        let produced = out.len() as u64;
        self.update_stats(|stats| stats.frames_out += produced);
        out
    }

    fn check_frame(frame: &VideoFrame) -> Result<(), PipelineError> {
        if !frame.is_consistent() {
            return Err(PipelineError::Engine(format!(
                "frame {} has {} bytes for {}x{} px",
                frame.sequence,
                frame.rgb.len(),
                frame.width_px,
                frame.height_px
            )));
        }
        Ok(())
    }
}

impl FrameStage for EngineStage {
    fn name(&self) -> String {
        let config = self.engine.config();
        format!(
            "stream diffusion t_index {:?} cfg {} on {} ({})",
            config.t_index_list,
            config.guidance.cfg_type,
            self.compute.backend,
            self.compute.adapter
        )
    }

    /// StreamDiffusion's own behaviour: whatever the batch emits now, labelled with this
    /// frame's timing (the pipeline delay is hidden). The runner uses
    /// [`FrameStage::process_aligned`] instead.
    fn process(&mut self, mut frame: VideoFrame) -> Result<VideoFrame, PipelineError> {
        Self::check_frame(&frame)?;
        self.apply_settings(frame.height_px, frame.width_px)?;
        self.update_stats(|stats| stats.frames_in += 1);
        let skip = self.applied.ssf_threshold.is_some() && self.ssf.check_rgb(&frame.rgb).skip;
        let counters = self.ssf.counters();
        self.update_stats(|stats| stats.ssf = counters);
        if skip && let Some(previous) = &self.last_output {
            frame.rgb = previous.clone();
        } else {
            // Whatever comes out now, even during the fill (as StreamDiffusion's __call__).
            if let Some(rgb) = self.run_engine(frame.clone(), Call::Unaligned)? {
                frame.rgb = rgb;
            }
            self.last_output = Some(frame.rgb.clone());
        }
        self.update_stats(|stats| stats.frames_out += 1);
        Ok(frame)
    }

    fn delay_frames(&self) -> usize {
        self.engine.delay_calls()
    }

    fn process_aligned(&mut self, frame: VideoFrame) -> Result<Vec<VideoFrame>, PipelineError> {
        Self::check_frame(&frame)?;
        self.apply_settings(frame.height_px, frame.width_px)?;
        self.update_stats(|stats| stats.frames_in += 1);
        let skip = self.applied.ssf_threshold.is_some() && self.ssf.check_rgb(&frame.rgb).skip;
        let counters = self.ssf.counters();
        self.update_stats(|stats| stats.ssf = counters);
        if skip {
            self.pending.push_back(Pending {
                frame,
                skipped: true,
                entered_call: 0,
                rgb: None,
            });
        } else {
            self.run_engine(frame, Call::Enter)?;
        }
        Ok(self.ready())
    }

    fn finish(&mut self) -> Result<Vec<VideoFrame>, PipelineError> {
        self.flush()?;
        Ok(self.ready())
    }
}
