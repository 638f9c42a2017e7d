//! The engine as a live [`FrameStage`]: frames in, restyled frames out, with live control.
//!
//! **Timing.** Stream Batch emits a frame `len(t_index_list) - 1` calls after it went in. Through
//! [`FrameStage::process`] every output carries the timing of the input it came from: nothing
//! comes out while the batch fills, and [`FrameStage::finish`] pushes the frames still in flight
//! out at the end (by feeding the last input again). So every input gives exactly one output, in
//! order, and capture-to-output latency includes the pipeline delay. A frame the similarity
//! filter skips is answered with the previous output, in its turn. (StreamDiffusion's own
//! `__call__` labels whatever the batch emits with the newest frame's timing; that is
//! [`StreamEngine::img2img`] called frame by frame.)
//!
//! **Live control.** [`EngineSettings`] in a [`Live`] handle, read once per frame; the prompt is
//! one of them: the stage encodes the starting prompt itself. Prompts are encoded
//! on a worker thread (off the hot path) and the embeddings are swapped in at a frame boundary,
//! so no frame waits for the text encoder. Guidance, delta and the SSF settings apply at the next
//! frame. A `t_index_list` of the same length and a new seed apply at the next frame with the
//! frames in flight carrying on; a new length, or a new frame size, first flushes the frames in
//! flight (no frame is lost) and then reallocates the buffers.

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

use burn::tensor::Tensor;
use streamdiff_models::device::ComputeDevice;
use streamdiff_models::sd::pipeline::StableDiffusion;
use streamdiff_types::FrameSize;

use super::settings::EngineSettings;
use super::ssf::{SimilarityFilter, SsfCounters};
use super::stream_batch::PromptEmbeds;
use super::{PromptEncoder, StreamEngine};
use crate::PipelineError;
use crate::stage::control::{Live, StageControls, StageStats, Validate};
use crate::stage::{FrameStage, VideoFrame};

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
}

/// One input waiting for its output, in input order.
struct Pending {
    frame: VideoFrame,
    /// Skipped by the similarity filter: answered with the previous output.
    skipped: bool,
    /// The stream-batch call the frame entered at (counted since the batch was allocated).
    entered_call: u64,
    /// The restyled picture (`[1, 3, H, W]` in `[0, 1]`, on the device), once the stream
    /// batch has emitted it.
    output: Option<Tensor<4>>,
}

/// The engine stage.
pub struct EngineStage {
    engine: StreamEngine,
    compute: ComputeDevice,
    settings: Live<EngineSettings>,
    applied: EngineSettings,
    worker: PromptWorker,
    prompt_generation: u64,
    ready_prompt: Option<(u64, PromptEmbeds)>,
    ssf: SimilarityFilter,
    stats: EngineStats,
    pending: VecDeque<Pending>,
    /// Stream-batch calls since the batch was allocated.
    calls: u64,
    /// The last input that entered the batch (fed again to flush).
    last_input: Option<VideoFrame>,
    /// The last picture handed out, for the similarity filter's skips.
    last_output: Option<Tensor<4>>,
    /// The last live settings found invalid (logged once, not applied).
    rejected: Option<EngineSettings>,
}

impl EngineStage {
    /// Builds the engine from a loaded model (see [`StreamEngine::from_model`]) with
    /// `settings` as its starting values, their prompt pair encoded now.
    pub fn from_model(
        model: StableDiffusion,
        compute: ComputeDevice,
        settings: EngineSettings,
    ) -> Result<Self, PipelineError> {
        settings.validate()?;
        let parts = StreamEngine::from_model(
            model,
            settings.engine_config(),
            &settings.prompt,
            &settings.negative_prompt,
            compute.device.clone(),
        )?;
        let ssf = SimilarityFilter::new(
            settings.ssf_threshold.unwrap_or(1.0),
            settings.ssf_max_skip_frames,
            settings.seed,
        );
        let stats = EngineStats {
            delay_frames: parts.engine.delay_calls(),
            ..EngineStats::default()
        };
        Ok(Self {
            engine: parts.engine,
            compute,
            settings: Live::new(settings.clone()),
            applied: settings,
            worker: PromptWorker::start(parts.prompts)?,
            prompt_generation: 0,
            ready_prompt: None,
            ssf,
            stats,
            pending: VecDeque::new(),
            calls: 0,
            last_input: None,
            last_output: None,
            rejected: None,
        })
    }

    /// A handle to change the settings live.
    pub fn settings(&self) -> Live<EngineSettings> {
        self.settings.clone()
    }

    /// The engine.
    pub fn engine(&self) -> &StreamEngine {
        &self.engine
    }

    /// Waits (up to `timeout`) until embeddings for the latest prompt are ready to be swapped
    /// in at the next frame. Returns whether they are. For tests and tools that need to know
    /// when a change lands; the stage itself never waits.
    pub fn wait_for_prompt(&mut self, timeout: Duration) -> Result<bool, PipelineError> {
        let wanted = self.wanted_settings();
        self.request_prompt_if_changed(&wanted)?;
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

    /// The live settings when they are valid; otherwise the applied ones stay (the bad values
    /// are logged once). Controllers check with [`Validate`] first; this guards the rest.
    fn wanted_settings(&mut self) -> EngineSettings {
        let wanted = self.settings.get();
        match wanted.validate() {
            Ok(()) => {
                self.rejected = None;
                wanted
            }
            Err(err) => {
                if self.rejected.as_ref() != Some(&wanted) {
                    tracing::warn!("engine settings not applied: {err}");
                    self.rejected = Some(wanted);
                }
                self.applied.clone()
            }
        }
    }

    /// Asks the worker for new embeddings when the prompt pair changed.
    fn request_prompt_if_changed(&mut self, wanted: &EngineSettings) -> Result<(), PipelineError> {
        if wanted.prompt != self.applied.prompt
            || wanted.negative_prompt != self.applied.negative_prompt
        {
            self.prompt_generation += 1;
            self.worker.request(
                self.prompt_generation,
                &wanted.prompt,
                &wanted.negative_prompt,
            )?;
            self.applied.prompt.clone_from(&wanted.prompt);
            self.applied
                .negative_prompt
                .clone_from(&wanted.negative_prompt);
        }
        Ok(())
    }

    /// Applies changed settings at a frame boundary, for a frame of `size`.
    fn apply_settings(&mut self, size: FrameSize) -> Result<(), PipelineError> {
        let wanted = self.wanted_settings();
        self.request_prompt_if_changed(&wanted)?;
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
                self.stats.prompt_swaps += 1;
            }
        }

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
            .is_some_and(|last| last.size() != size);
        if new_length || new_size {
            self.flush()?;
        }
        if wanted.t_index_list != self.applied.t_index_list {
            self.engine.set_t_index_list(&wanted.t_index_list)?;
            self.applied.t_index_list = wanted.t_index_list;
            self.stats.delay_frames = self.engine.delay_calls();
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
        self.pending
            .iter()
            .any(|p| !p.skipped && p.output.is_none())
    }

    /// Runs one stream-batch call on `frame` and hands its output to the input that entered
    /// `len(t_index_list) - 1` calls ago, if there is one (during the fill there is none, and
    /// the output is not even decoded).
    fn run_engine(&mut self, frame: VideoFrame, mode: Call) -> Result<(), PipelineError> {
        let device = self.engine.device().clone();
        let size = frame.size();
        let image = frame.to_tensor(&device)? * 2.0 - 1.0;
        if self.engine.prepare(size)? {
            self.calls = 0;
            self.stats.reallocations += 1;
        }
        let call = self.calls;
        self.calls += 1;
        let delay = self.engine.delay_calls() as u64;
        if mode == Call::Enter {
            self.last_input = Some(frame.clone());
            self.pending.push_back(Pending {
                frame,
                skipped: false,
                entered_call: call,
                output: None,
            });
        }
        let latents = self.engine.encode(image);
        let x_t = self.engine.noised(latents)?;
        let x0 = self.engine.denoise(x_t)?;
        self.stats.unet_calls += 1;
        self.stats.unet_rows = self.engine.unet_rows();
        let owner = call.checked_sub(delay).and_then(|owner| {
            self.pending
                .iter()
                .position(|p| !p.skipped && p.output.is_none() && p.entered_call == owner)
        });
        if let Some(index) = owner {
            let images = self.engine.decode(x0);
            // Left on the device: the next stage or a GPU-drawn output takes it from there.
            self.pending[index].output = Some(((images + 1.0) / 2.0).clamp(0.0, 1.0));
        }
        Ok(())
    }

    /// Feeds the last input again until every frame in flight has come out.
    fn flush(&mut self) -> Result<(), PipelineError> {
        let Some(last) = self.last_input.clone() else {
            return Ok(());
        };
        while self.in_flight() {
            self.run_engine(last.clone(), Call::Flush)?;
            self.stats.flush_calls += 1;
        }
        Ok(())
    }

    /// The outputs that are ready, in input order.
    fn ready(&mut self) -> Result<Vec<VideoFrame>, PipelineError> {
        let mut out = Vec::new();
        while let Some(front) = self.pending.front() {
            if !front.skipped && front.output.is_none() {
                break;
            }
            let Some(mut pending) = self.pending.pop_front() else {
                break;
            };
            let output = match (pending.skipped, pending.output.take()) {
                (false, Some(output)) => Some(output),
                // A skip re-emits the previous output (its own input if there is none yet).
                _ => self.last_output.clone(),
            };
            match output {
                Some(output) => {
                    self.last_output = Some(output.clone());
                    out.push(pending.frame.with_tensor(output)?);
                }
                None => out.push(pending.frame),
            }
        }
        self.stats.frames_out += out.len() as u64;
        Ok(out)
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

    fn process(&mut self, frame: VideoFrame) -> Result<Vec<VideoFrame>, PipelineError> {
        self.apply_settings(frame.size())?;
        self.stats.frames_in += 1;
        let skip = self.applied.ssf_threshold.is_some() && self.ssf.check_rgb(frame.rgb()?).skip;
        self.stats.ssf = self.ssf.counters();
        if skip {
            self.pending.push_back(Pending {
                frame,
                skipped: true,
                entered_call: 0,
                output: None,
            });
        } else {
            self.run_engine(frame, Call::Enter)?;
        }
        self.ready()
    }

    fn finish(&mut self) -> Result<Vec<VideoFrame>, PipelineError> {
        self.flush()?;
        self.ready()
    }

    fn reset(&mut self) {
        self.pending.clear();
        self.last_input = None;
        self.last_output = None;
        self.engine.reset();
        self.ssf.reset();
    }

    fn delay_frames(&self) -> usize {
        self.engine.delay_calls()
    }

    fn controls(&self) -> StageControls {
        StageControls {
            engine: Some(self.settings.clone()),
            ..StageControls::default()
        }
    }

    fn stats(&self) -> StageStats {
        StageStats {
            engine: Some(self.stats.clone()),
        }
    }

    fn compute(&self) -> Option<&ComputeDevice> {
        Some(&self.compute)
    }
}
