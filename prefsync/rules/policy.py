"""The effective defaults a transaction is evaluated under, after layering.

A :class:`Policy` is built by :mod:`prefsync.defaults.layers` from the built-in
defaults, the global layer, the store's region layer and the store layer. ``origins``
records which layer set each value, so an applied item can say where its value came
from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

__all__ = [
    "CATEGORIES",
    "CHANNELS",
    "LoyaltyPolicy",
    "Policy",
    "TierRule",
]

CHANNELS = ("DINE_IN", "TAKEAWAY", "DELIVERY", "ONLINE_PICKUP")
"""Sales channels of a transaction."""

CATEGORIES = (
    "allergy",
    "diet",
    "instructions",
    "seating",
    "payment",
    "loyalty",
    "communication",
)
"""Rule categories that a channel can switch on or off. ``allergy`` is always on."""


@dataclass(frozen=True, slots=True)
class TierRule:
    """Discount and points multiplier of one loyalty tier."""

    discount_percent: Decimal
    points_multiplier: Decimal


@dataclass(frozen=True, slots=True)
class LoyaltyPolicy:
    """Tier rules, excluded product categories and the points-earning rate.

    ``default_tier`` applies to customers without a tier (None: they earn nothing).
    ``expired_tier`` applies once a tier's last day has passed in the store's local
    date (None: no loyalty benefits after expiry).
    """

    tiers: Mapping[str, TierRule]
    excluded_categories: frozenset[str]
    points_per_currency_unit: Decimal
    default_tier: str | None = None
    expired_tier: str | None = "MEMBER"


@dataclass(frozen=True, slots=True)
class Policy:
    """Effective defaults for one store.

    ``channel_categories`` maps a channel to the rule categories that apply to it.
    ``origins`` maps a dotted path (``communication.default_channel``) to the layer
    that set it (``builtin``, ``global``, ``region:EU-W``, ``store:S001``).
    """

    loyalty: LoyaltyPolicy
    channel_categories: Mapping[str, frozenset[str]]
    default_channel: str | None = None
    terminal_writable_fields: frozenset[str] = frozenset()
    time_zone: str | None = None
    region: str | None = None
    origins: Mapping[str, str] = field(default_factory=dict)
    chain: tuple[str, ...] = ()
    # Results of origin() by path and of categories_for() by channel. The policy is
    # immutable and the rules request the same few on every lookup, so each is kept
    # after its first computation. Threads that race compute the same value.
    _origin_cache: dict[str, str] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )
    _categories_cache: dict[str, frozenset[str]] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    def origin(self, path: str) -> str:
        """Return the layer that set ``path``.

        When layers set parts of ``path`` (one field of a tier), the layer of highest
        precedence among them is returned. When none did, the nearest parent's layer
        is returned, and ``builtin`` when no layer touched it at all.
        """
        found = self._origin_cache.get(path)
        if found is None:
            found = self._origin_cache[path] = self._find_origin(path)
        return found

    def _find_origin(self, path: str) -> str:
        prefix = path + "."
        setters = [
            layer
            for key, layer in self.origins.items()
            if key == path or key.startswith(prefix)
        ]
        if setters:
            return max(setters, key=self._rank)
        while path:
            path = path.rpartition(".")[0]
            found = self.origins.get(path)
            if found is not None:
                return found
        return "builtin"

    def _rank(self, layer_id: str) -> int:
        return self.chain.index(layer_id) if layer_id in self.chain else -1

    def applies(self, channel: str, category: str) -> bool:
        """Return True when ``category`` rules apply to ``channel`` transactions."""
        return category in self.categories_for(channel)

    def categories_for(self, channel: str) -> frozenset[str]:
        """Return the rule categories that apply to ``channel``, allergy included."""
        categories = self._categories_cache.get(channel)
        if categories is None:
            configured = self.channel_categories.get(channel, frozenset())
            categories = self._categories_cache[channel] = configured | {"allergy"}
        return categories
