"""nba stage: the seeded omnichannel HCP simulator (embedded default data and evaluation ground truth).

``nba simulate --hcps N --days D --seed S --out DATA_DIR [--world NAME]`` runs today's logging
policy in a fresh world and writes the CRM contract tables (products, reps, hcps, content,
touchpoints, outcomes, feedback) atomically, with the hidden side in ``DATA_DIR/_ground_truth/``.
``--world NAME`` overlays the preset ``configs/worlds/NAME.yaml`` (``simulator.worlds``:
``WORLD_NAMES``, ``world_config(name, **dotted_overrides) -> SimulatorConfig``): worlds with
content repetition decay, per-channel wear-out windows, cross-channel warm-up, a saturating
response link, stronger or weaker per-HCP timing effects, and other reps' habits (including
calls that carry content: ``contentless_channels``). The ground truth holds:

- ``world.json``: the full ``SimulatorConfig`` used (seed, knobs), ground-truth version, a summary;
- ``hcp_params.parquet``: hidden per-HCP parameters in hcps-table order (channel and topic
  affinity, trend multiplier, preferred weekday/daypart, responsiveness, starting adoption,
  share cap, expected weekly market boxes);
- ``content_params.parquet``: hidden content quality; ``final_state.parquet``: adoption,
  per-channel contact load, last delivered day per channel and warm-up opens after the last
  week; ``final_exposure.parquet`` (worlds with repetition decay): decayed deliveries per
  (HCP, item); ``touch_truth.parquet``: the oracle's P(positive response) for every logged
  touch (``event_id``, ``p_response``).

Training code must never read ``_ground_truth``; evaluation code uses it through:

``simulator.environment.Environment``
    ``Environment.from_data_dir(DATA_DIR, start="beginning"|"end", seed=None, strict=False)``;
    ``env.run(policy, weeks=None) -> RunResult`` (``.value`` dict, ``.touchpoints()``,
    ``.outcomes()``, ``.p_response``); ``env.observe()`` / ``env.step(actions)`` to drive it by
    hand; ``env.oracle`` and ``env.state`` for the truth. A fresh ``Environment`` per run.
``simulator.environment.share_of_oracle_gain(v_policy, v_logged, v_oracle, key=...)``
    (V_policy - V_logged) / (V_oracle - V_logged), default key ``expected_positive_responses``
    (also ``expected_prescriptions``).
``simulator.oracle.Oracle``
    ``expected_response(state, week, hcp, channel, content, weekday, daypart)``: vectorised
    P(opened / engaged / attended) (all arguments index arrays; content -1 = none);
    ``adoption_gain(state, hcp, channel, content)`` (gain if positive);
    ``expected_prescriptions(state, week)``; the model is spelled out in its docstring.
``simulator.policies``
    ``BehaviourPolicy(cfg)`` (the logging policy; ``channel_distributions(obs)`` and
    ``content_distribution(obs, hcp, channel)`` give its exact probabilities),
    ``RuleBasedPolicy(cfg)`` (the domain brief's engine), ``RandomEligiblePolicy(k=1)``,
    ``OraclePolicy(env, touches_per_week=None)``, and ``best_actions(oracle, state, week,
    eligibility, k)`` / ``best_per_channel(...)`` for the oracle's best action per HCP.
``simulator.evaluation``
    ``evaluate(DATA_DIR, policies={name: make_policy(env)}, weeks=None)`` runs the ready
    policies (plus yours) on fresh environments and returns values and shares of the oracle's
    gain (``nba bench oracle-gap --data DATA_DIR`` prints them); ``logged_states(DATA_DIR)``
    yields ``(obs, true state, oracle)`` for every logged week, to value alternative actions
    at the logged contexts.
``simulator.metrics``
    ``repeat_share(touches, days=30, since=None)`` (share of outbound touches with content that
    repeat an item the HCP was sent within ``days``) and ``window_share(touches, channel, days,
    since=None)`` (share of a channel's touches within ``days`` of the previous one), on touch
    arrays or a contract touchpoints table.
``simulator.actions.Actions``
    What a policy returns: parallel index arrays hcp, channel (``CHANNELS`` order), content
    (-1 none), weekday (0 = Monday), daypart (``DAYPARTS`` order, HCP local time), optional
    propensity; ``Actions.from_frame(df, hcp_ids, content_ids)`` builds one from ids.

Logged ``propensity``: each HCP-week the logging policy makes two independent decisions, the
rep's (visit, department meeting, phone, 1:1 WeChat, or nothing) and marketing's (WeChat push,
email, webinar, conference invite, or nothing); a touch's propensity is the probability of its
(channel, content) within its decision (time of day is not part of it). Inbound rows have none.

Which channels carry no content is a world's ``contentless_channels`` (default phone); policies
read it from ``obs.eligibility.contentless``, never from the default ``world.CONTENTLESS_MASK``.

Indices everywhere are positions in the contract tables as written (hcps, content, reps,
products rows) and in ``contract.schema`` vocabularies (CHANNELS, TOPICS, SEGMENTS, ...).
"""
