"""The meter simulator: a fleet of believable homes (or lab rigs) publishing like real meters.

fleet (who) -> weather (offline seeded clouds | Open-Meteo) -> solar (pvlib) + load (demandlib)
-> engine (power balance, battery, counters, scenarios) -> messages (firmware JSON) -> runner (MQTT).
Also: state (save/restore), commands + control (MQTT command topic, ``enerlink edge scenario``),
console (``--interactive``), clock (real time, ``--speed``, backfill), replay, truth (physics behind
the emulated chips), metrics, controller (start/stop over MQTT, the API's ``/simulation``).

Presence: one process publishes all its meters over ONE MQTT connection, so per-meter last wills are
impossible; each simulated meter's retained ``{prefix}/meters/{id}/presence`` is ``{"online": true}``
at start and ``{"online": false}`` on a stop (controller) or a clean shutdown only (a crash leaves it
``true``; the fleet's own state topic, ``{prefix}/fleet/state``, is the connection's last will).
"""
