"""Who may reach whom, decided: the minors' rules of the policy file (`safety.policy`), each
member's DM audience, message requests and blocks. Pure decisions on the facts `core.contacts`
gathers; it calls these at wiring time (`app.py`).

A group may not hold a minor together with an adult who is not their friend (that would be a
direct channel to a stranger, through a third member who knows both): each newcomer is checked
against everyone in it.

The table, for one member (the actor) reaching another (the target) by starting a conversation
or adding them to a group, first match wins:
1. the target is hidden from the actor (a minor, to an adult they do not follow; a blocker, to
   whom they block): the answer is the one for a name that is no account;
2. the actor blocks the target: refused until they unblock;
3. the actor is under the direct-messaging age (13 to 15 by default): refused;
4. the target is: refused;
5. the actor is a teen (16 or 17) and they are not friends (mutual follows): refused;
6. the target is a teen and they are not friends: refused;
7. the target's audience is `no_one`, or `friends` and they are not friends: refused;
8. they are not friends: a message request (the target accepts, deletes or blocks), unless the
   target's region's policy says `non_friend_messages = "allow"`;
9. allowed.
A send is refused when the sender is under the direct-messaging age, has not accepted a request
to them, or — in a direct conversation — when either blocks the other, the partner is under the
direct-messaging age, a teen is not friends with the other, or an unaccepted request's sender
has sent its 3 messages or sends an attachment or a link.

In a group, a send does not reach (`in_group`; refused instead when it would reach no one):
a minor from an adult who is not their friend (one who turned 18 in the group, or a friendship
that ended), nor a teen a link or an attachment from anyone who is not their friend. A member
who has not accepted the group gets from each member who is not their friend what a direct
request's sender may send (core applies that limit, as it counts the messages).
"""

from __future__ import annotations

import datetime as dt

from keyhold.core.contacts import REQUEST_MESSAGES, Between, Form, Party, Reach, SendFacts
from keyhold.core.errors import Problem, conflict, forbidden
from keyhold.safety.policy import Band, PolicyError, PolicyFile

TEEN_OFF = "direct messaging is off at your age (the safety policy of your region)"
NOT_YET = "until they accept your message request"


class ContactRules:
    def __init__(self, policy: PolicyFile, today: type[dt.date] = dt.date) -> None:
        self._policy = policy
        self._today = today

    def band(self, birthdate: str, region: str) -> str:
        """The rules a member falls under today (a birthdate that cannot be read, or an age
        under the minimum, counts as the youngest band: the safe side)."""
        try:
            born = dt.date.fromisoformat(birthdate)
            return self._policy.current().for_region(region).band(born, self._today.today()).value
        except (ValueError, PolicyError):
            return Band.YOUNG_TEEN.value

    def default_audience(self, band: str, region: str) -> str:
        if band == Band.ADULT:
            return "everyone"
        if band == Band.TEEN:
            return self._policy.current().for_region(region).teen_default_audience
        return "no_one"

    def audience_choice(self, band: str, audience: str) -> Problem | None:
        if band == Band.YOUNG_TEEN and audience != "no_one":
            return forbidden(f"{TEEN_OFF}: the only setting is no_one")
        if band == Band.TEEN and audience == "everyone":
            return forbidden("members under 18 can choose friends or no_one, never everyone")
        return None

    def findable(self, viewer: Party, target: Party, between: Between) -> bool:
        if between.target_blocked_actor:
            return False
        # Minors find each other (else no two could ever start a friendship); adults find a
        # minor only once the minor follows them.
        return target.band == Band.ADULT or viewer.band != Band.ADULT or between.target_follows_actor

    def reach(self, actor: Party, target: Party, between: Between, form: Form) -> Reach:
        if not self.findable(actor, target, between):
            return Reach("refuse")
        if between.actor_blocked_target:
            return Reach("refuse", conflict(f"you block {target.username}: unblock them first"))
        if actor.band == Band.YOUNG_TEEN:
            return Reach("refuse", forbidden(TEEN_OFF))
        if target.band == Band.YOUNG_TEEN:
            # Worded as for anyone who accepts no one: the members they follow learn no age from it.
            return Reach("refuse", forbidden(f"{target.username} does not accept new conversations or group adds"))
        if actor.band == Band.TEEN and not between.friends:
            return Reach("refuse", forbidden("at your age you can message friends only (members who follow each other)"))
        if target.band == Band.TEEN and not between.friends:
            return Reach("refuse", forbidden(f"{target.username} accepts messages from friends only"))
        if target.audience == "no_one":
            return Reach("refuse", forbidden(f"{target.username} does not accept new conversations or group adds"))
        if target.audience == "friends" and not between.friends:
            return Reach("refuse", forbidden(f"{target.username} accepts messages from friends only"))
        if between.friends or self._policy.current().for_region(target.region).non_friend_messages == "allow":
            return Reach("allow")
        return Reach("request")

    def together(self, member: Party, other: Party, between: Between) -> Problem | None:
        if between.friends or (member.band == Band.ADULT) == (other.band == Band.ADULT):
            return None
        if member.band != Band.ADULT:
            return forbidden(f"{member.username} cannot join: some members here are not their friends")
        return forbidden(f"{member.username} cannot join: a member under 18 here is not their friend")

    def in_group(
        self, sender: Party, member: Party, between: Between, attachment: bool, link: bool | None
    ) -> Problem | None:
        if between.friends or member.band == Band.ADULT:
            return None
        if sender.band == Band.ADULT:
            # Put together as two minors (or as friends), they are not now: the minor no longer
            # hears from them, as a direct conversation would stop. Worded without the reason:
            # the sender learns no one's age from it.
            return forbidden("your messages do not reach the other members here (their safety settings)")
        if attachment or link:
            return forbidden("no links or attachments to members under 18 who are not your friends")
        return None

    def send(self, facts: SendFacts) -> Problem | None:
        if facts.sender.band == Band.YOUNG_TEEN:
            return forbidden(TEEN_OFF)
        if facts.request == "asked":
            return conflict("accept the message request first (or delete it)")
        if facts.request == "asking":
            if facts.sent_so_far >= REQUEST_MESSAGES:
                return forbidden(f"{NOT_YET} you can send at most {REQUEST_MESSAGES} messages")
            if facts.attachment:
                return forbidden(f"no attachments {NOT_YET}")
            if facts.link:
                return forbidden(f"no links {NOT_YET}")
        partner, between = facts.partner, facts.between
        if partner is None or between is None:
            return None
        if between.actor_blocked_target:
            return forbidden("you block the other member: unblock them to send here")
        if between.target_blocked_actor:
            return forbidden("you cannot send messages in this conversation")
        if partner.band == Band.YOUNG_TEEN:
            return forbidden("the other member cannot receive direct messages at their age")
        if Band.TEEN in (facts.sender.band, partner.band) and not between.friends:
            return forbidden("members under 18 can message friends only (members who follow each other)")
        return None
