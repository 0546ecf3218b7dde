#!/usr/bin/env python3
"""Writes bench/semantic/pairs.jsonl, the labelled evaluation set for the semantic cache.

Every pair is written here by hand; the script only lays them out deterministically and checks
them, so the JSONL is reproducible and reviewable in one place (`python3 make_pairs.py` rewrites
it byte for byte; `--check` only verifies that the committed files match). It also writes
limits.jsonl: a few pairs the literal guard cannot judge by construction, reported apart.

- `paraphrase` pairs ask the same thing (the cache SHOULD answer one with the other's answer),
  kinds: reword, synonym, reorder, contraction, case_punct, politeness, literal_kept (a
  rewording that keeps its numbers/quotes/URLs/code, so the literal guard is exercised on hits).
- `hard_negative` pairs are one template with one slot filled two ways, so they differ in
  exactly one number, unit, entity, negation, quoted string, URL or code span (the cache must
  NOT answer one with the other's answer).

Checks: no duplicate pair (in either order), no pair of identical texts, every text non-empty,
negatives differ in exactly their slot, both labels present in roughly equal numbers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "pairs.jsonl"
LIMITS_OUT = OUT.with_name("limits.jsonl")

# (kind, a, b): same question, different wording.
PARAPHRASES: list[tuple[str, str, str]] = [
    # --- reword: music production and audio samples
    ("reword", "What's the tempo of this loop?", "How fast is this loop in beats per minute?"),
    ("reword", "How do I find the key of a sample?", "What's the way to figure out which key a sample is in?"),
    ("reword", "How can I separate the vocals from a song?", "What's the best way to isolate the vocal stem from a song?"),
    ("reword", "Why does my mix sound muddy?", "What makes my mix sound so muddy?"),
    ("reword", "How loud should I master my track for streaming?", "What loudness should I aim for when mastering a track for streaming services?"),
    ("reword", "What sample rate should I record at?", "Which sample rate is best for recording?"),
    ("reword", "How do I make a drum loop sound less robotic?", "How can I make my drum loop feel more human?"),
    ("reword", "What does sidechain compression do?", "What is the purpose of sidechain compression?"),
    ("reword", "How do I quantize MIDI notes in my DAW?", "How can I snap my MIDI notes to the grid in my DAW?"),
    ("reword", "Can you explain what a stem is in music production?", "What is meant by a stem in music production?"),
    ("reword", "How do I stop my samples from clipping?", "How can I prevent my samples from clipping?"),
    ("reword", "What's the difference between mixing and mastering?", "How is mixing different from mastering?"),
    ("reword", "How do I chop a vocal sample?", "What's the process for chopping up a vocal sample?"),
    ("reword", "Why is there a click at the end of my loop?", "What causes the click at the end of my loop?"),
    ("reword", "How should I organise my sample library?", "What's a good way to organise a sample library?"),
    ("reword", "How do I match the tempo of two loops?", "How can I get two loops to play at the same tempo?"),
    ("reword", "What is a LUFS meter used for?", "What do you use a LUFS meter for?"),
    ("reword", "How do I export individual stems from my project?", "How can I bounce out each stem of my project separately?"),
    ("reword", "How do I make my bass audible on small speakers?", "How can I get my bassline to come through on small speakers?"),
    ("reword", "What is dithering and when should I use it?", "When should I apply dither, and what does it do?"),
    ("reword", "How can I tell if a sample is royalty free?", "How do I know whether a sample is royalty free?"),
    ("reword", "What does a high-pass filter do to a vocal?", "What happens to a vocal when you put a high-pass filter on it?"),
    ("reword", "How do I detect the BPM of an audio file?", "How can I work out the BPM of an audio file?"),
    ("reword", "Why do my MIDI drums sound flat?", "What makes my programmed MIDI drums sound lifeless?"),
    ("reword", "How do I transpose a sample without changing its speed?", "How can I change a sample's pitch while keeping its tempo the same?"),
    ("reword", "What is the best way to layer kick drums?", "How should I go about layering kick drums?"),
    ("reword", "How can I reduce background noise in a recording?", "How do I get rid of background noise in my recording?"),
    ("reword", "What is headroom in mixing?", "What does headroom mean when mixing?"),
    ("reword", "How do I write a chord progression?", "What's a good approach to writing a chord progression?"),
    ("reword", "How do I loop a sample seamlessly?", "How can I make a sample loop without any audible seam?"),
    ("reword", "What does a limiter do on the master bus?", "What is the job of a limiter on the master bus?"),
    ("reword", "Why does my reverb sound metallic?", "What makes my reverb sound so metallic?"),
    ("reword", "How do I record guitar directly into my interface?", "What's the way to plug a guitar straight into my audio interface and record it?"),
    ("reword", "What is phase cancellation?", "Can you explain what phase cancellation is?"),
    ("reword", "How do I make a sample fit the key of my song?", "How can I get a sample to match my song's key?"),
    # --- reword: general assistant
    ("reword", "How do I boil an egg?", "What's the way to boil an egg?"),
    ("reword", "What is the capital of Australia?", "Which city is the capital of Australia?"),
    ("reword", "How do I reverse a list in Python?", "What's the way to reverse a Python list?"),
    ("reword", "Can you summarise the plot of Hamlet?", "Give me a summary of the plot of Hamlet."),
    ("reword", "How many days are there in a leap year?", "How many days does a leap year have?"),
    ("reword", "What causes the seasons on Earth?", "Why does Earth have seasons?"),
    ("reword", "How do I write a cover letter?", "What's the best way to write a cover letter?"),
    ("reword", "Can you suggest a healthy breakfast?", "What's a healthy breakfast idea?"),
    ("reword", "How do I center a div in CSS?", "What's the way to center a div with CSS?"),
    ("reword", "Explain recursion to a beginner.", "Can you explain recursion in simple terms for a beginner?"),
    ("reword", "How do I fix a leaking tap?", "How can I repair a dripping tap?"),
    ("reword", "Why is the sky blue?", "What makes the sky look blue?"),
    ("reword", "How do I improve my sleep?", "What can I do to sleep better?"),
    ("reword", "What is the difference between a virus and a bacterium?", "How does a virus differ from a bacterium?"),
    ("reword", "How do I undo my last git commit?", "How can I revert the most recent commit in git?"),
    # --- synonym swaps
    ("synonym", "How do I make my track louder without distortion?", "How do I make my song louder without distortion?"),
    ("synonym", "What's a good free reverb plugin?", "What's a decent free reverb plugin?"),
    ("synonym", "How do I fix a muddy low end?", "How do I repair a muddy low end?"),
    ("synonym", "How can I speed up a loop without changing the pitch?", "How can I make a loop faster without changing the pitch?"),
    ("synonym", "What microphone should I buy for vocals?", "What mic should I buy for vocals?"),
    ("synonym", "How do I reduce sibilance on a vocal?", "How do I lessen sibilance on a vocal?"),
    ("synonym", "Which headphones are best for mixing?", "Which headphones are ideal for mixing?"),
    ("synonym", "How do I make my hi-hats sound less harsh?", "How do I make my hi-hats sound less piercing?"),
    ("synonym", "How can I make a pad sound wider?", "How can I make a pad sound broader?"),
    ("synonym", "Is it okay to sell beats that use samples?", "Is it alright to sell beats that use samples?"),
    ("synonym", "How do I find samples for a lo-fi beat?", "How do I get samples for a lo-fi beat?"),
    ("synonym", "What's the quickest way to learn music theory?", "What's the fastest way to learn music theory?"),
    ("synonym", "How do I tidy up a messy project?", "How do I clean up a messy project?"),
    ("synonym", "How do I begin producing electronic music?", "How do I start producing electronic music?"),
    ("synonym", "What is a simple recipe for pancakes?", "What is an easy recipe for pancakes?"),
    ("synonym", "How do I get better at public speaking?", "How do I improve at public speaking?"),
    ("synonym", "What's a good gift for a music producer?", "What's a nice present for a music producer?"),
    ("synonym", "How can I remove clicks from a recording?", "How can I eliminate clicks from a recording?"),
    ("synonym", "How do I stop feedback from my microphone?", "How do I prevent feedback from my microphone?"),
    ("synonym", "Why is my laptop so slow when I run my DAW?", "Why is my laptop so sluggish when I run my DAW?"),
    ("synonym", "What's the best way to store vinyl records?", "What's the right way to store vinyl records?"),
    ("synonym", "How do I pick a name for my band?", "How do I choose a name for my band?"),
    ("synonym", "Can you help me write a short bio for my artist page?", "Can you help me write a brief bio for my artist page?"),
    ("synonym", "How do I make a snare drum hit harder?", "How do I make a snare drum punch harder?"),
    ("synonym", "What's a common mistake beginners make when mixing?", "What's a typical mistake beginners make when mixing?"),
    # --- reorder
    ("reorder", "In a mix, how loud should the kick be?", "How loud should the kick be in a mix?"),
    ("reorder", "When mastering, should I use a limiter?", "Should I use a limiter when mastering?"),
    ("reorder", "For vocals, which compressor settings work best?", "Which compressor settings work best for vocals?"),
    ("reorder", "On a budget, what's the best audio interface?", "What's the best audio interface on a budget?"),
    ("reorder", "How do I, as a beginner, learn to mix?", "As a beginner, how do I learn to mix?"),
    ("reorder", "With only headphones, can I mix a track properly?", "Can I mix a track properly with only headphones?"),
    ("reorder", "What EQ settings should I use on an acoustic guitar?", "On an acoustic guitar, what EQ settings should I use?"),
    ("reorder", "Before mastering, what should I check in my mix?", "What should I check in my mix before mastering?"),
    ("reorder", "In lo-fi hip hop, how are drums usually processed?", "How are drums usually processed in lo-fi hip hop?"),
    ("reorder", "To make a sample sound vintage, what effects can I use?", "What effects can I use to make a sample sound vintage?"),
    ("reorder", "For a podcast, what microphone would you recommend?", "What microphone would you recommend for a podcast?"),
    ("reorder", "While travelling, how can I keep making music?", "How can I keep making music while travelling?"),
    ("reorder", "In winter, how should I care for my guitar?", "How should I care for my guitar in winter?"),
    ("reorder", "For someone new to cooking, what dishes are easy?", "What dishes are easy for someone new to cooking?"),
    ("reorder", "At night, why do I hear a hum from my speakers?", "Why do I hear a hum from my speakers at night?"),
    ("reorder", "For a beginner, is a MIDI keyboard worth buying?", "Is a MIDI keyboard worth buying for a beginner?"),
    ("reorder", "Using only free plugins, can I make a professional track?", "Can I make a professional track using only free plugins?"),
    ("reorder", "After recording vocals, what should I do first?", "What should I do first after recording vocals?"),
    ("reorder", "In a DAW, what is automation?", "What is automation in a DAW?"),
    ("reorder", "For streaming platforms, how should I export my track?", "How should I export my track for streaming platforms?"),
    # --- contractions
    ("contraction", "What is the best way to warm up my voice?", "What's the best way to warm up my voice?"),
    ("contraction", "Why does my vocal not sit in the mix?", "Why doesn't my vocal sit in the mix?"),
    ("contraction", "I am new to producing; where do I start?", "I'm new to producing; where do I start?"),
    ("contraction", "Why can I not hear my MIDI keyboard in my DAW?", "Why can't I hear my MIDI keyboard in my DAW?"),
    ("contraction", "It is a good idea to mix at low volume, right?", "It's a good idea to mix at low volume, right?"),
    ("contraction", "What is wrong with my low end?", "What's wrong with my low end?"),
    ("contraction", "Why is my sample not playing back?", "Why isn't my sample playing back?"),
    ("contraction", "I do not understand how compression works.", "I don't understand how compression works."),
    ("contraction", "Why will my plugin not load?", "Why won't my plugin load?"),
    ("contraction", "What is the point of a reference track?", "What's the point of a reference track?"),
    ("contraction", "Why are my drums not punchy?", "Why aren't my drums punchy?"),
    ("contraction", "Should I not use presets when learning synthesis?", "Shouldn't I use presets when learning synthesis?"),
    ("contraction", "I have got a cheap microphone; how do I get the most out of it?", "I've got a cheap microphone; how do I get the most out of it?"),
    ("contraction", "Where is the best place to put my studio monitors?", "Where's the best place to put my studio monitors?"),
    ("contraction", "Why does it not sound the same on my phone?", "Why doesn't it sound the same on my phone?"),
    ("contraction", "What is a good way to learn the piano as an adult?", "What's a good way to learn the piano as an adult?"),
    ("contraction", "They are saying analog is warmer; is that true?", "They're saying analog is warmer; is that true?"),
    ("contraction", "We are recording a podcast; what gear do we need?", "We're recording a podcast; what gear do we need?"),
    ("contraction", "Who is the best person to ask about sample clearance?", "Who's the best person to ask about sample clearance?"),
    ("contraction", "Why did my export not include the reverb tails?", "Why didn't my export include the reverb tails?"),
    # --- case and punctuation
    ("case_punct", "What's the tempo of this loop?", "what's the TEMPO of this loop"),
    ("case_punct", "How do I normalise a sample?", "how do i normalise a sample"),
    ("case_punct", "What key is this song in?", "WHAT KEY IS THIS SONG IN?"),
    ("case_punct", "Can you recommend a good free synth plugin?", "can you recommend a good free synth plugin??"),
    ("case_punct", "How do I add swing to my hi-hats?", "How do I add swing to my hi-hats"),
    ("case_punct", "What is a compressor's attack time?", "what is a compressor's attack time ?"),
    ("case_punct", "How do I make a beat in GarageBand?", "how do I make a beat in garageband"),
    ("case_punct", "Why does my vocal sound thin?", "Why does my vocal sound thin?!"),
    ("case_punct", "What is a sample pack?", "What Is A Sample Pack?"),
    ("case_punct", "How do I sidechain in Ableton Live?", "how do i sidechain in ableton live?"),
    ("case_punct", "What's the best DAW for beginners?", "whats the best DAW for beginners"),
    ("case_punct", "Explain how a vocoder works.", "explain how a vocoder works"),
    ("case_punct", "How do I clean my keyboard?", "How do I clean my keyboard...?"),
    ("case_punct", "What is the meaning of life?", "what is the meaning of life"),
    ("case_punct", "How do I write a good chorus?", "HOW DO I WRITE A GOOD CHORUS"),
    ("case_punct", "Is vinyl better than streaming?", "is vinyl better than streaming?"),
    ("case_punct", "What does a bus do in a mixer?", "What does a BUS do in a mixer?"),
    ("case_punct", "How do I get a warm analog sound?", "How do I get a warm, analog sound?"),
    ("case_punct", "Should I use reverb or delay on vocals?", "should I use reverb, or delay, on vocals?"),
    ("case_punct", "How do I tune a guitar by ear?", "how do I tune a guitar by ear?"),
    ("case_punct", "What are stems in music?", "what are STEMS in music?"),
    ("case_punct", "Can you write a short poem about rain?", "Can you write a short poem about rain"),
    ("case_punct", "What's a good name for a synthwave track?", "What's a good name for a synthwave track ?"),
    ("case_punct", "How does auto-tune work?", "how does autotune work?"),
    ("case_punct", "Is a condenser mic good for rap vocals?", "is a condenser mic good for rap vocals"),
    # --- politeness and filler
    ("politeness", "How do I make a chord progression sound sad?", "Please tell me how to make a chord progression sound sad."),
    ("politeness", "What's the best way to learn mixing?", "Hi! What's the best way to learn mixing?"),
    ("politeness", "How do I compress a vocal?", "Could you please explain how to compress a vocal?"),
    ("politeness", "What is a wavetable synth?", "Quick question: what is a wavetable synth?"),
    ("politeness", "How do I make my kick punchier?", "Hey, how do I make my kick punchier?"),
    ("politeness", "Recommend a good book on music production.", "Could you recommend a good book on music production, please?"),
    ("politeness", "How do I start a podcast?", "I was wondering, how do I start a podcast?"),
    ("politeness", "How do I clear a sample for commercial use?", "Can you tell me how to clear a sample for commercial use?"),
    ("politeness", "What is the circle of fifths?", "Sorry if this is basic, but what is the circle of fifths?"),
    ("politeness", "How do I mix rap vocals?", "Thanks in advance: how do I mix rap vocals?"),
    ("politeness", "What is granular synthesis?", "I'd love to know: what is granular synthesis?"),
    ("politeness", "What should go on a good party playlist?", "Hey, what should go on a good party playlist?"),
    # --- rewordings that keep literals (numbers, units, keys, quotes, URLs, code) on both sides
    ("literal_kept", "Can you speed up this 90 bpm loop to 120 bpm?", "Could you take this loop from 90 bpm up to 120 bpm?"),
    ("literal_kept", "Is 44.1 kHz good enough for music production?", "For producing music, is a 44.1 kHz sample rate good enough?"),
    ("literal_kept", "What does -14 LUFS mean for Spotify?", "For Spotify, what does a target of -14 LUFS mean?"),
    ("literal_kept", "How do I convert a 24-bit WAV to 16-bit?", "How can I turn a 24-bit WAV into a 16-bit one?"),
    ("literal_kept", "Why does my 808 distort above 60 Hz?", "What makes my 808 distort above 60 Hz?"),
    ("literal_kept", "What does `np.fft.rfft` return?", "What is returned by `np.fft.rfft`?"),
    ("literal_kept", "Summarise https://example.com/blog/mixing-tips for me.", "Give me a summary of https://example.com/blog/mixing-tips."),
    ("literal_kept", "What chords fit a song in A minor?", "Which chords work for a song in A minor?"),
    ("literal_kept", "How long in seconds is a 16-bar loop at 140 bpm?", "At 140 bpm, how many seconds does a 16-bar loop last?"),
    ("literal_kept", "Is a 4:1 compressor ratio good for vocals?", "For vocals, is a compression ratio of 4:1 a good choice?"),
    ("literal_kept", "Translate 'good morning' into Spanish.", "How do you say 'good morning' in Spanish?"),
    ("literal_kept", "What does the error \"sample rate mismatch\" mean in my DAW?", "My DAW says \"sample rate mismatch\"; what does that mean?"),
    ("literal_kept", "How do I set a MIDI note to velocity 127?", "How can I give a MIDI note a velocity of 127?"),
    ("literal_kept", "Why is my song in 3/4 time hard to quantize?", "What makes my 3/4 time song hard to quantize?"),
    ("literal_kept", "Should the attack on my drum bus be 30 ms?", "Is 30 ms a good attack for my drum bus?"),
    ("literal_kept", "What does `ffmpeg -ar 48000` do?", "Can you explain what `ffmpeg -ar 48000` does?"),
    ("literal_kept", "Is 320 kbps MP3 good enough for a demo?", "For a demo, is a 320 kbps MP3 good enough?"),
    ("literal_kept", "What's the delay time for a quarter note at 120 bpm?", "At 120 bpm, how long is a quarter-note delay?"),
    ("literal_kept", "Is it safe to cut everything below 30 Hz on a mix?", "On a mix, is cutting everything below 30 Hz safe?"),
    ("literal_kept", "What does the file kick_01.wav in my sample pack contain?", "In my sample pack, what's in the file kick_01.wav?"),
    ("literal_kept", "What is 15% of 240?", "How much is 15% of 240?"),
    ("literal_kept", "Convert 5 miles to kilometres.", "How many kilometres are 5 miles?"),
    ("literal_kept", "Does https://docs.python.org/3/library/wave.html support 24-bit files?", "Can the module documented at https://docs.python.org/3/library/wave.html read 24-bit files?"),
    ("literal_kept", "Why does `git push` ask for my password every time?", "Every time I run `git push` it asks for my password; why?"),
    ("literal_kept", "How do I pitch a vocal up 3 semitones without chipmunk artifacts?", "Without chipmunk artifacts, how can I pitch a vocal up 3 semitones?"),
]

# (kind, template, value_a, value_b): the template's one "{}" slot filled two ways.
HARD_NEGATIVES: list[tuple[str, str, str, str]] = [
    # --- number (same unit, different value)
    ("number", "Can you time-stretch this loop to {} bpm?", "120", "140"),
    ("number", "Is {} bpm a good tempo for a house track?", "124", "128"),
    ("number", "How long in seconds is 8 bars at {} bpm?", "90", "174"),
    ("number", "How many seconds long is {} bars at 120 bpm?", "8", "16"),
    ("number", "Should I master my track to {} LUFS for YouTube?", "-14", "-9"),
    ("number", "Will cutting {} dB at 250 Hz clean up my vocal?", "3", "6"),
    ("number", "Is a boost of 2 dB at {} kHz enough to add air to a vocal?", "10", "12"),
    ("number", "Should the compressor attack on my snare be {} ms?", "10", "30"),
    ("number", "How do I pitch this sample up {} semitones in Ableton?", "2", "7"),
    ("number", "Is a {}:1 ratio too much compression for a vocal?", "4", "8"),
    ("number", "Make me a {}-bar drum loop at 90 bpm.", "4", "8"),
    ("number", "Should I export my stems at {}-bit?", "24", "32"),
    ("number", "What's the delay time in ms for a dotted eighth at {} bpm?", "120", "128"),
    ("number", "Is {}% swing too much for hi-hats?", "55", "65"),
    ("number", "How do I quantize everything to 1/{} notes?", "16", "8"),
    ("number", "How do I write a melody in {}/4 time?", "3", "5"),
    ("number", "Give me {} tips for mixing vocals.", "5", "10"),
    ("number", "Why is my drum machine not responding on MIDI channel {}?", "10", "1"),
    ("number", "What does a MIDI velocity of {} sound like on a piano patch?", "127", "64"),
    ("number", "Should I record at {} kHz for a film project?", "48", "96"),
    ("number", "Is a {} ms reverb pre-delay right for vocals?", "20", "80"),
    ("number", "How do I slow a loop down from 120 bpm to {} bpm?", "100", "90"),
    ("number", "How loud is {} dB SPL for mixing over a long session?", "85", "95"),
    ("number", "What is {}% of 240?", "15", "25"),
    ("number", "Convert {} miles to kilometres.", "5", "8"),
    ("number", "Set a timer for {} minutes.", "10", "25"),
    ("number", "Plan a {}-day trip to Rome for me.", "3", "5"),
    ("number", "What's 2 to the power of {}?", "10", "12"),
    ("number", "Is {} a prime number?", "97", "91"),
    ("number", "Summarise this article in {} words.", "50", "100"),
    ("number", "Recommend a laptop for music production under ${}.", "800", "1500"),
    ("number", "How many calories are in {} eggs?", "2", "3"),
    ("number", "What was the best-selling album of {}?", "1997", "2007"),
    ("number", "What are the new features in Python 3.{}?", "12", "13"),
    ("number", "How much RAM do I need to run {} instances of Serum?", "20", "40"),
    ("number", "Can I run {} tracks of audio on a Raspberry Pi?", "16", "64"),
    ("number", "What happens if I set the buffer size to {} samples?", "64", "1024"),
    ("number", "Is a high-pass at {} Hz too high for a male vocal?", "100", "150"),
    # --- unit (same number, different unit)
    ("unit", "Cut everything below 30 {} on the bass.", "Hz", "kHz"),
    ("unit", "Should the attack of my compressor be 10 {}?", "ms", "seconds"),
    ("unit", "How do I shift the whole song by 2 {}?", "semitones", "octaves"),
    ("unit", "How do I trim the sample by 50 {}?", "ms", "samples"),
    ("unit", "How long is 4 {} at 120 bpm?", "bars", "beats"),
    ("unit", "Is 5 {} of tuning difference audible?", "cents", "semitones"),
    ("unit", "How long does it take to walk 10 {}?", "km", "miles"),
    ("unit", "How do I convert 100 {} to Celsius?", "Fahrenheit", "Kelvin"),
    ("unit", "Is 2 {} enough storage for a sample library?", "GB", "TB"),
    ("unit", "Can I lift 40 {} safely as a beginner?", "kg", "lb"),
    ("unit", "How do I fade out the last 8 {} of a track?", "bars", "seconds"),
    ("unit", "Is a 300 {} fade-in too slow for a pad?", "ms", "seconds"),
    ("unit", "What does a 1 {} sine wave sound like?", "kHz", "Hz"),
    ("unit", "Is a -1 {} ceiling safe for streaming?", "dBTP", "LUFS"),
    ("unit", "Will a 20 {} delay make my vocal sound doubled?", "ms", "seconds"),
    ("unit", "Should I leave 6 {} of headroom before mastering?", "dB", "LU"),
    # --- entity: musical keys and notes
    ("entity", "What chords go well with a melody in {}?", "C minor", "A minor"),
    ("entity", "Can you transpose this bassline to {}?", "E minor", "G minor"),
    ("entity", "Write a chord progression in {} for a sad song.", "D minor", "F minor"),
    ("entity", "Is this sample in {}? It sounds bright.", "G major", "D major"),
    ("entity", "What's the relative minor of {}?", "C major", "E major"),
    ("entity", "How do I tune my 808 to {}?", "F#", "Bb"),
    ("entity", "Which scale should I solo over in {}?", "A dorian", "A phrygian"),
    ("entity", "Why does my kick clash with a bass in {}?", "E minor", "F minor"),
    # --- entity: DAWs, plugins, gear, formats, brands
    ("entity", "How do I sidechain a kick to the bass in {}?", "Ableton Live", "FL Studio"),
    ("entity", "How do I export stems from {}?", "Logic Pro", "Pro Tools"),
    ("entity", "What are good alternatives to {} for sound design?", "Serum", "Massive"),
    ("entity", "Should I save my samples as {} files?", "WAV", "FLAC"),
    ("entity", "How do I convert a {} file to MIDI?", "WAV", "MP3"),
    ("entity", "How do I connect my {} to my laptop?", "Launchpad", "Maschine"),
    ("entity", "What's the best way to record vocals with a {} microphone?", "Shure SM7B", "Rode NT1"),
    ("entity", "Is {} good for mixing on headphones?", "Sonarworks", "Waves NX"),
    ("entity", "Can I use {} plugins on a Mac?", "VST3", "AAX"),
    ("entity", "How do I route audio between apps with {}?", "BlackHole", "Loopback"),
    ("entity", "Is the {} interface good for recording drums?", "Focusrite Scarlett", "Universal Audio Apollo"),
    ("entity", "How do I get a vintage sound from a {} emulation?", "Minimoog", "Juno-106"),
    # --- entity: instruments, elements, genres (lower-case common nouns)
    ("entity", "How do I make the {} punchier in my mix?", "kick", "snare"),
    ("entity", "What EQ settings work for {}?", "a bass guitar", "an acoustic guitar"),
    ("entity", "How do I program realistic {} patterns?", "hi-hat", "ride cymbal"),
    ("entity", "What reverb works best on {}?", "vocals", "strings"),
    ("entity", "How do I make a {} beat from scratch?", "trap", "drum and bass"),
    ("entity", "What's the typical song structure in {}?", "techno", "country"),
    ("entity", "How do I layer {} samples without phase issues?", "clap", "snare"),
    ("entity", "How do I remove the {} from a song?", "vocals", "drums"),
    ("entity", "How do I make my {} sound wider?", "pads", "backing vocals"),
    ("entity", "What compression settings suit a {}?", "piano", "trumpet"),
    ("entity", "Should I pan the {} to the left?", "rhythm guitar", "shaker"),
    ("entity", "How do I record a {} at home?", "drum kit", "grand piano"),
    ("entity", "Should I put {} on the vocal bus?", "reverb", "delay"),
    ("entity", "What's the difference between a {} and a limiter?", "compressor", "clipper"),
    ("entity", "How do I use {} on drums?", "a transient shaper", "a noise gate"),
    ("entity", "Should I learn {} before mastering?", "mixing", "sound design"),
    ("entity", "How do I get a warmer {} sound?", "bass", "guitar"),
    ("entity", "How do I tune my {}?", "guitar", "violin"),
    ("entity", "What's the best {} for recording vocals at home?", "microphone", "preamp"),
    ("entity", "How do I clean up a noisy {} recording?", "vocal", "guitar"),
    ("entity", "Can you explain how a {} works?", "vocoder", "phaser"),
    ("entity", "How do I make a {} sound in a synth?", "pluck", "pad"),
    ("entity", "What's the best way to learn {}?", "piano", "drums"),
    ("entity", "How do I sample a {} record?", "jazz", "soul"),
    ("entity", "Which is the best free {} plugin?", "chorus", "flanger"),
    ("entity", "How do I automate {} in my DAW?", "volume", "panning"),
    ("entity", "How do I write a {} for my song?", "chorus", "bridge"),
    ("entity", "How do I stop my {} from clipping?", "master bus", "kick drum"),
    ("entity", "What causes {} in a recording?", "hiss", "hum"),
    ("entity", "How do I record {} with one microphone?", "a choir", "an acoustic guitar"),
    ("entity", "How do I mic a {} for a live gig?", "trumpet", "saxophone"),
    ("entity", "How do I make a sample sound like it's playing from {}?", "a telephone", "another room"),
    # --- entity: general assistant (places, languages, people, programming languages)
    ("entity", "Translate this sentence into {}.", "Spanish", "French"),
    ("entity", "What's the weather usually like in {} in April?", "Lisbon", "Oslo"),
    ("entity", "What is the capital of {}?", "Australia", "Austria"),
    ("entity", "Give me a short biography of {}.", "Aretha Franklin", "Ella Fitzgerald"),
    ("entity", "How do I read a CSV file in {}?", "Python", "Rust"),
    ("entity", "What are the main themes of {}?", "Hamlet", "Macbeth"),
    ("entity", "What's the best time of year to visit {}?", "Japan", "Iceland"),
    ("entity", "How do I make {} at home?", "sourdough bread", "focaccia"),
    ("entity", "What's the time difference between London and {}?", "Tokyo", "Sydney"),
    ("entity", "Write a short poem about {}.", "autumn", "winter"),
    ("entity", "How do I install packages with {}?", "pip", "npm"),
    ("entity", "What's a good recipe for {}?", "lasagne", "risotto"),
    ("entity", "How do I get rid of {} in my garden?", "slugs", "aphids"),
    ("entity", "How do I remove a {} stain from a shirt?", "coffee", "wine"),
    ("entity", "What should I pack for a {} trip?", "camping", "skiing"),
    ("entity", "How do I train my {} to come when called?", "dog", "cat"),
    ("entity", "How do I convert {} to a string in Python?", "an integer", "a list"),
    ("entity", "What is the population of {}?", "Canada", "Mexico"),
    # --- negation (one side negated)
    ("negation", "Should I {} use a limiter on my master bus?", "", "not"),
    ("negation", "Is it a good idea {} to normalise my samples before chopping them?", "", "not"),
    ("negation", "Why {} my MIDI controller show up in my DAW?", "does", "doesn't"),
    ("negation", "Can I sell a beat {} uncleared samples in it?", "with", "without"),
    ("negation", "Which plugins {} work on Apple silicon?", "", "don't"),
    ("negation", "Why {} the reverb tail cut off when I export?", "does", "doesn't"),
    ("negation", "Should my vocal chain {} include a de-esser?", "", "not"),
    ("negation", "How do I mix a song {} using any compression?", "", "without"),
    ("negation", "Is it bad {} to dither when exporting to 16-bit?", "", "not"),
    ("negation", "Why {} my samples sound the same on different speakers?", "do", "don't"),
    ("negation", "What happens if I {} quantize the drums?", "", "don't"),
    ("negation", "Which DAWs {} support ARA plugins?", "", "don't"),
    ("negation", "Is it true that you {} need a treated room to mix?", "", "don't"),
    ("negation", "Should I {} bounce my MIDI tracks to audio before mixing?", "", "not"),
    ("negation", "Why {} my audio interface work when the laptop runs on battery?", "does", "doesn't"),
    ("negation", "Which foods {} contain gluten?", "", "don't"),
    ("negation", "Is it safe to eat eggs that have {} been refrigerated?", "", "not"),
    ("negation", "Why {} my code compile on Windows?", "does", "doesn't"),
    ("negation", "How do I write a cover letter {} mentioning my salary expectations?", "", "without"),
    ("negation", "Should I {} tell my manager I'm looking for a new job?", "", "not"),
    ("negation", "Can I run a marathon {} training for it?", "after", "without"),
    ("negation", "Is it {} okay to use royalty-free loops in a commercial release?", "", "not"),
    ("negation", "Which sample packs {} require attribution?", "", "don't"),
    ("negation", "Why {} my synth respond to pitch bend?", "does", "doesn't"),
    # --- quoted string
    ("quoted", "What does the error '{}' mean in Ableton?", "Audio engine is off", "Disk overload"),
    ("quoted", "Write lyrics for a song called \"{}\".", "Midnight Drive", "Morning Drive"),
    ("quoted", "Translate \"{}\" into German.", "good night", "good morning"),
    ("quoted", "Find samples tagged \"{}\" in my library.", "dusty", "bright"),
    ("quoted", "Is \"{}\" a good name for my sample pack?", "Lo-Fi Dreams", "Lo-Fi Nights"),
    ("quoted", "What does the warning \"{}\" mean when I export?", "clipping detected", "buffer underrun"),
    ("quoted", "Rename all tracks that contain \"{}\" to uppercase.", "vox", "drums"),
    ("quoted", "Rhyme words for \"{}\", please.", "heart", "night"),
    ("quoted", "What does the phrase \"{}\" mean?", "break a leg", "break the ice"),
    ("quoted", "Is \"{}\" grammatically correct?", "fewer samples", "less samples"),
    ("quoted", "Write a tweet announcing my single \"{}\".", "Echoes", "Shadows"),
    ("quoted", "Why does my DAW say '{}' when I open a project?", "missing plugin", "missing samples"),
    ("quoted", "Search my notes for \"{}\".", "mix feedback", "master feedback"),
    ("quoted", "Check the spelling of \"{}\".", "accommodate", "acommodate"),
    # --- URL
    ("url", "Summarise the article at {} for me.", "https://example.com/blog/mixing-tips", "https://example.com/blog/mastering-tips"),
    ("url", "Is the sample pack at {} royalty free?", "https://samples.example.org/packs/dusty-drums", "https://samples.example.org/packs/vinyl-keys"),
    ("url", "What license does {} use?", "https://github.com/example/audio-tools", "https://github.com/example/midi-tools"),
    ("url", "Is {} a safe site to download plugins from?", "https://plugins.example.net", "https://freeplugins.example.net"),
    ("url", "Read {} and list the key points.", "https://docs.example.com/v2/guide", "https://docs.example.com/v3/guide"),
    ("url", "Why does {} return a 404?", "https://api.example.com/v1/tracks", "https://api.example.com/v1/stems"),
    ("url", "What BPM is the track at {}?", "https://music.example.com/track/48213", "https://music.example.com/track/48312"),
    ("url", "Can you check whether {} is down?", "https://status.example.io", "https://status.example.dev"),
    ("url", "Translate the page at {} into English.", "https://example.de/impressum", "https://example.fr/impressum"),
    ("url", "Extract the tracklist from {}.", "https://example.com/album?id=17", "https://example.com/album?id=71"),
    ("url", "Is the tutorial at {} up to date?", "https://learn.example.com/sidechain", "https://learn.example.com/vocoder"),
    ("url", "Compare the prices on {} with last year's.", "https://shop.example.com/interfaces", "https://shop.example.com/microphones"),
    # --- code span
    ("code", "What does `{}` do in pandas?", "df.dropna()", "df.fillna()"),
    ("code", "Why does `{}` raise an error in my script?", "librosa.load(path, sr=None)", "librosa.load(path, mono=False)"),
    ("code", "What's the difference between `git {}` and a normal commit?", "commit --amend", "commit --fixup"),
    ("code", "What does `{}` print in Python?", "print(0.1 + 0.2)", "print(0.1 * 3)"),
    ("code", "Explain the `{}` flag in ffmpeg.", "-ac", "-ar"),
    ("code", "Is `{}` safe to run on my project folder?", "rm -rf build", "rm -rf src"),
    ("code", "What does `{}` return for a stereo file?", "soundfile.info(path).channels", "soundfile.info(path).frames"),
    ("code", "Why is `{}` so slow on large arrays?", "np.append", "np.concatenate"),
    ("code", "How do I fix `{}` in Rust?", "E0382", "E0502"),
    ("code", "What does the SQL `{}` do?", "LEFT JOIN", "INNER JOIN"),
    ("code", "Why does `{}` fail on Windows?", "os.fork()", "os.kill()"),
    ("code", "What does `{}` mean in a regex?", "\\d+", "\\w+"),
    ("code", "Convert this loop to use `{}`.", "map", "filter"),
    ("code", "What does the MIDI message `{}` do?", "0x90 0x3C 0x7F", "0x80 0x3C 0x00"),
]


# Known limits, measured separately (limits.jsonl, not in the headline rates): pairs the
# literal guard cannot judge by construction. Hard negatives with no literal to compare (order
# swaps, antonyms) and paraphrases the guard refuses (unit conversions, digits vs words).
LIMITS: list[tuple[str, str, str, str]] = [
    ("hard_negative", "order_swap", "How do I slow a loop from 120 bpm to 90 bpm?", "How do I slow a loop from 90 bpm to 120 bpm?"),
    ("hard_negative", "order_swap", "Should the kick be louder than the bass?", "Should the bass be louder than the kick?"),
    ("hard_negative", "order_swap", "Convert my WAV files to MP3.", "Convert my MP3 files to WAV."),
    ("hard_negative", "order_swap", "Translate this from English to Spanish.", "Translate this from Spanish to English."),
    ("hard_negative", "order_swap", "Is Ableton better than Logic for electronic music?", "Is Logic better than Ableton for electronic music?"),
    ("hard_negative", "antonym", "How do I speed up a sample without changing its pitch?", "How do I slow down a sample without changing its pitch?"),
    ("hard_negative", "antonym", "How do I make my vocal louder in the mix?", "How do I make my vocal quieter in the mix?"),
    ("hard_negative", "antonym", "Should I boost the highs on my master?", "Should I cut the highs on my master?"),
    ("hard_negative", "antonym", "How do I increase the attack on my compressor?", "How do I decrease the attack on my compressor?"),
    ("hard_negative", "antonym", "Should I add reverb before the compressor?", "Should I add reverb after the compressor?"),
    ("hard_negative", "antonym", "How do I pitch a vocal up an octave?", "How do I pitch a vocal down an octave?"),
    ("hard_negative", "antonym", "What are the advantages of mixing on headphones?", "What are the disadvantages of mixing on headphones?"),
    ("paraphrase", "unit_conversion", "Is 44.1 kHz enough for music?", "Is 44100 Hz enough for music?"),
    ("paraphrase", "unit_conversion", "Set the attack to 0.5 seconds.", "Set the attack to 500 ms."),
    ("paraphrase", "digits_vs_words", "Give me one tip for mixing vocals.", "Give me 1 tip for mixing vocals."),
    ("paraphrase", "digits_vs_words", "Make a twenty-five bar loop.", "Make a 25 bar loop."),
    ("paraphrase", "decimal_form", "Set the tempo to 120.0 bpm.", "Set the tempo to 120 bpm."),
    ("paraphrase", "enharmonic", "What chords are in C# minor?", "What chords are in Db minor?"),
    ("paraphrase", "name_synonym", "How do I sidechain in Ableton Live?", "How do I sidechain in Live?"),
    ("paraphrase", "negation_paraphrase", "How do I transpose a sample without changing its speed?", "How can I transpose a sample but keep its speed?"),
]


def fill(template: str, value: str) -> str:
    """Fills the slot; an empty value removes the slot and the one space before it."""
    if value == "":
        return template.replace(" {}", "", 1)
    return template.replace("{}", value, 1)


def build() -> list[dict]:
    rows: list[dict] = []
    for kind, a, b in PARAPHRASES:
        rows.append({"a": a, "b": b, "label": "paraphrase", "kind": kind})
    for kind, template, va, vb in HARD_NEGATIVES:
        if template.count("{}") != 1:
            raise SystemExit(f"make_pairs: template needs exactly one slot: {template!r}")
        rows.append({"a": fill(template, va), "b": fill(template, vb), "label": "hard_negative", "kind": kind})
    check(rows)
    return rows


def check(rows: list[dict]) -> None:
    seen: set[tuple[str, str]] = set()
    for r in rows:
        a, b = r["a"], r["b"]
        if not a.strip() or not b.strip():
            raise SystemExit(f"make_pairs: empty text in {r}")
        if a == b:
            raise SystemExit(f"make_pairs: identical texts in {r}")
        if "{}" in a or "{}" in b or "  " in a or "  " in b:
            raise SystemExit(f"make_pairs: unfilled slot or double space in {r}")
        key = tuple(sorted((a, b)))
        if key in seen:
            raise SystemExit(f"make_pairs: duplicate pair {r}")
        seen.add(key)
    para = sum(r["label"] == "paraphrase" for r in rows)
    neg = len(rows) - para
    if len(rows) < 300 or not 0.4 <= para / len(rows) <= 0.6:
        raise SystemExit(f"make_pairs: want >= 300 pairs, about half each; have {para} + {neg}")


def render(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def build_limits() -> list[dict]:
    rows = [{"a": a, "b": b, "label": label, "kind": kind} for label, kind, a, b in LIMITS]
    keys = {tuple(sorted((r["a"], r["b"]))) for r in rows}
    if len(keys) != len(rows) or any(r["a"] == r["b"] for r in rows):
        raise SystemExit("make_pairs: duplicate or identical pair in LIMITS")
    return rows


def main() -> None:
    outputs = {OUT: render(build()), LIMITS_OUT: render(build_limits())}
    if "--check" in sys.argv[1:]:
        for path, text in outputs.items():
            if not path.exists() or path.read_text() != text:
                raise SystemExit(f"make_pairs: {path.name} is not what make_pairs.py writes; run it")
        print("make_pairs: pairs.jsonl and limits.jsonl up to date")
        return
    for path, text in outputs.items():
        path.write_text(text)
        print(f"make_pairs: wrote {text.count(chr(10))} pairs to {path}")


if __name__ == "__main__":
    main()
