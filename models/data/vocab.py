"""Hand-written topic vocabularies and sentence templates the simulator writes item texts from.

Each topic's name is the item category. Words are chosen to be specific to their topic, so that a sentence
encoder (and a bag of words) separates topics; people and organisations are fictional, places are real.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TopicVocabulary:
    """The words, named entities and tags of one topic."""

    name: str
    nouns: tuple[str, ...]
    verbs: tuple[str, ...]  # third person present ("launches"): fits titles and report sentences
    adjectives: tuple[str, ...]
    people: tuple[str, ...]
    places: tuple[str, ...]
    organizations: tuple[str, ...]
    tags: tuple[str, ...]

    @property
    def words(self) -> tuple[str, ...]:
        """Every common word of the topic (nouns, verbs, adjectives)."""
        return self.nouns + self.verbs + self.adjectives


def _t(text: str) -> tuple[str, ...]:
    return tuple(w.strip() for w in text.split(",") if w.strip())


TOPICS: tuple[TopicVocabulary, ...] = (
    TopicVocabulary(
        name="technology",
        nouns=_t(
            "smartphone, chip, software, startup, cloud platform, data center, algorithm, semiconductor, "
            "browser, operating system, app store, battery, cybersecurity, encryption, robot, processor, "
            "developer tools, open-source project, network, wearable, laptop, server, database, "
            "machine learning model, satellite internet, quantum computer, firmware update, search engine"
        ),
        verbs=_t(
            "launches, ships, patches, upgrades, open-sources, acquires, benchmarks, rolls out, unveils"
        ),
        adjectives=_t(
            "faster, encrypted, wireless, cloud-based, open-source, digital, automated, scalable, modular"
        ),
        people=_t("Priya Raman, Tobias Lindqvist, Mei Takahashi, Daniel Okoro, Sofia Marchetti"),
        places=_t("Silicon Valley, Bangalore, Shenzhen, Seattle, Tallinn"),
        organizations=_t("Nimbus Systems, Qubitline, Corvid Labs, Helix Silicon, OpenGate Foundation"),
        tags=_t("ai, gadgets, software, chips, cybersecurity, startups, cloud, open-source"),
    ),
    TopicVocabulary(
        name="science",
        nouns=_t(
            "telescope, experiment, genome, particle, fossil, galaxy, enzyme, laboratory, hypothesis, "
            "microscope, neutron star, protein, molecule, comet, dataset, expedition, specimen, "
            "peer review, black hole, vaccine trial, cell culture, exoplanet, gravitational wave, "
            "isotope, dinosaur skeleton, coral sample"
        ),
        verbs=_t("discovers, measures, observes, sequences, publishes, confirms, replicates, maps, detects"),
        adjectives=_t(
            "peer-reviewed, experimental, microscopic, cosmic, genetic, ancient, molecular, theoretical"
        ),
        people=_t("Dr. Helena Voss, Dr. Kwame Mensah, Dr. Ingrid Sato, Dr. Lucas Ferreira, Dr. Amara Okafor"),
        places=_t("Geneva, the Atacama Desert, Antarctica, Cambridge, Hawaii"),
        organizations=_t(
            "Orion Institute, Meridian Observatory, BioStrand Lab, Kepler Science Trust, Polaris Academy"
        ),
        tags=_t("space, physics, biology, research, astronomy, genetics, discovery, chemistry"),
    ),
    TopicVocabulary(
        name="sports",
        nouns=_t(
            "championship, striker, goalkeeper, playoff, marathon, transfer window, coach, stadium, "
            "tournament, league table, penalty, relay, match, season opener, final whistle, midfielder, "
            "grand slam, podium, derby, training camp, free kick, world record, quarterfinal, "
            "home crowd, injury list, rookie"
        ),
        verbs=_t("wins, defeats, signs, scores, qualifies, trains, clinches, equalizes, sprints"),
        adjectives=_t(
            "unbeaten, dramatic, record-breaking, defensive, athletic, relegated, competitive, decisive"
        ),
        people=_t("Marco Dellavalle, Aisha Bello, Jonas Eriksen, Lucia Moreno, Kenji Watanabe"),
        places=_t("Manchester, Madrid, Melbourne, Milan, Buenos Aires"),
        organizations=_t(
            "Northgate United, Riverside Rovers, Falcon Athletics, Summit Cycling Team, Harbor City FC"
        ),
        tags=_t("football, tennis, athletics, transfers, olympics, basketball, cycling, running"),
    ),
    TopicVocabulary(
        name="politics",
        nouns=_t(
            "election, parliament, senator, ballot, coalition, campaign, referendum, legislation, "
            "cabinet, governor, opposition, policy, debate, constituency, treaty, minister, budget vote, "
            "polling station, amendment, primary, diplomacy, sanctions, summit, manifesto, voter turnout"
        ),
        verbs=_t("votes, vetoes, campaigns, negotiates, legislates, resigns, endorses, ratifies, debates"),
        adjectives=_t(
            "bipartisan, electoral, legislative, diplomatic, constitutional, partisan, federal, municipal"
        ),
        people=_t(
            "Senator Ruth Calloway, Minister Anders Holm, Governor Elena Ruiz, Mayor Samuel Adeyemi, Rep. Claire Dubois"
        ),
        places=_t("Brussels, Washington, Westminster, Canberra, Ottawa"),
        organizations=_t(
            "Civic Reform Party, National Assembly Watch, Progress Alliance, Liberty Caucus, Ballot Trust"
        ),
        tags=_t("elections, policy, government, diplomacy, parliament, law, campaigns, voting"),
    ),
    TopicVocabulary(
        name="health",
        nouns=_t(
            "clinic, vaccine, diet, sleep, hospital, nutrition, therapy, symptom, diagnosis, "
            "mental health, exercise routine, blood pressure, prescription, nurse, immune system, "
            "heart disease, screening, physiotherapy, patient, wellbeing, allergy, cholesterol, "
            "public health campaign, surgery, vitamin"
        ),
        verbs=_t("treats, prevents, diagnoses, recommends, reduces, recovers, screens, prescribes, heals"),
        adjectives=_t("clinical, healthy, chronic, preventive, medical, balanced, therapeutic, mental"),
        people=_t(
            "Dr. Nadia Farouk, Dr. Owen Griffiths, Nurse Leila Haddad, Dr. Rafael Santos, Dr. Yuki Mori"
        ),
        places=_t("Boston, Copenhagen, Singapore, Toronto, Lyon"),
        organizations=_t(
            "Wellspring Clinic, CarePoint Health, Vital Signs Network, Harmony Medical Group, Pulse Research"
        ),
        tags=_t("wellness, fitness, nutrition, medicine, mental-health, sleep, disease, healthcare"),
    ),
    TopicVocabulary(
        name="travel",
        nouns=_t(
            "itinerary, flight, hostel, beach, passport, road trip, luggage, resort, ferry, "
            "guidebook, hiking trail, airport lounge, train journey, cruise, boutique hotel, "
            "backpacker, visa, island, old town, sightseeing tour, campsite, layover, travel insurance, "
            "mountain pass, souvenir"
        ),
        verbs=_t("explores, books, wanders, reopens, cruises, hikes, visits, discovers, escapes"),
        adjectives=_t("scenic, remote, budget, coastal, luxurious, off-the-beaten-path, tropical, historic"),
        people=_t("Clara Beaumont, Mateo Alvarez, Hana Novak, Ravi Chandran, Freya Magnusson"),
        places=_t("Lisbon, Kyoto, Patagonia, Marrakesh, Reykjavik"),
        organizations=_t("Wayfarer Tours, Bluecompass Travel, Horizon Air, Nomad Rail, Islandhop Ferries"),
        tags=_t("destinations, flights, hotels, adventure, backpacking, city-breaks, beaches, hiking"),
    ),
    TopicVocabulary(
        name="food",
        nouns=_t(
            "recipe, restaurant, chef, sourdough, street food, tasting menu, spice blend, bakery, "
            "vineyard, dumpling, farmers market, olive oil, dessert, ramen, cookbook, fermentation, "
            "brunch, kitchen, pastry, barbecue, cheese, cocktail bar, harvest, food truck, espresso"
        ),
        verbs=_t("bakes, cooks, serves, ferments, grills, roasts, tastes, seasons, plates"),
        adjectives=_t("crispy, seasonal, savory, homemade, organic, spicy, plant-based, slow-cooked"),
        people=_t(
            "Chef Lorenzo Bianchi, Chef Ama Boateng, Chef Hiro Tanaka, Chef Margot Leclerc, Chef Diego Ramos"
        ),
        places=_t("Naples, Oaxaca, Osaka, Bologna, New Orleans"),
        organizations=_t(
            "Golden Ladle Bistro, Harvest Table Co., Saffron House, Rustic Oven Bakery, Umami Collective"
        ),
        tags=_t("recipes, restaurants, cooking, baking, vegan, wine, street-food, dining"),
    ),
    TopicVocabulary(
        name="finance",
        nouns=_t(
            "stock market, interest rate, inflation, bond yield, earnings report, dividend, hedge fund, "
            "mortgage, central bank, portfolio, cryptocurrency, index fund, quarterly profit, "
            "savings account, exchange rate, ipo, recession, credit card, pension, valuation, "
            "trading volume, balance sheet, tax bill, venture capital, share buyback"
        ),
        verbs=_t("rallies, slumps, invests, borrows, hedges, trades, raises, forecasts, lends"),
        adjectives=_t("bullish, bearish, fiscal, volatile, profitable, monetary, quarterly, diversified"),
        people=_t("Victoria Hale, Rohan Mehta, Gregor Baumann, Nkechi Obi, Laura Whitfield"),
        places=_t("Wall Street, Frankfurt, Hong Kong, Zurich, the City of London"),
        organizations=_t(
            "Sterling Capital, Ironbridge Bank, Crescent Asset Management, Ledgerline, Summit Securities"
        ),
        tags=_t("markets, investing, economy, banking, crypto, personal-finance, stocks, rates"),
    ),
    TopicVocabulary(
        name="culture",
        nouns=_t(
            "novel, gallery, exhibition, film festival, orchestra, album, poet, museum, sculpture, "
            "theater production, documentary, bestseller, jazz club, painting, choreographer, "
            "book fair, premiere, opera, street art, memoir, soundtrack, curator, screenplay, "
            "art auction, literary prize"
        ),
        verbs=_t("premieres, exhibits, performs, publishes, curates, directs, composes, celebrates, tours"),
        adjectives=_t(
            "acclaimed, avant-garde, cinematic, lyrical, classical, contemporary, theatrical, experimental"
        ),
        people=_t("Isabel Cortez, Julien Moreau, Adaeze Nwosu, Felix Hartmann, Noor Rahman"),
        places=_t("Paris, Venice, Berlin, Edinburgh, Mexico City"),
        organizations=_t(
            "Lumen Gallery, Aurora Philharmonic, Inkwell Press, Silver Screen Society, Mosaic Arts Council"
        ),
        tags=_t("books, film, music, art, theater, museums, festivals, literature"),
    ),
    TopicVocabulary(
        name="climate",
        nouns=_t(
            "emissions, heatwave, solar farm, wind turbine, carbon tax, glacier, drought, wildfire, "
            "sea level, rainforest, electric vehicle, heat pump, flood defense, carbon capture, "
            "biodiversity, recycling scheme, coral reef, renewable grid, methane leak, reforestation, "
            "climate model, permafrost, green bond, storm surge, hydrogen plant"
        ),
        verbs=_t("warms, decarbonizes, restores, floods, pledges, retrofits, offsets, protects, melts"),
        adjectives=_t("renewable, sustainable, low-carbon, extreme, coastal, net-zero, arid, ecological"),
        people=_t("Greta Lindholm, Tomas Okonkwo, Dr. Mira Patel, Javier Solano, Annika Berg"),
        places=_t("the Arctic, the Amazon, Bangladesh, the Sahel, Greenland"),
        organizations=_t(
            "Verdant Futures, Blue Planet Trust, Solaris Energy, Tidewater Institute, Carbon Watch"
        ),
        tags=_t(
            "climate-change, energy, environment, renewables, weather, conservation, emissions, sustainability"
        ),
    ),
    TopicVocabulary(
        name="education",
        nouns=_t(
            "classroom, curriculum, university, scholarship, teacher, exam, homework, campus, "
            "tuition fee, online course, literacy, kindergarten, lecture, graduate, student loan, "
            "school board, textbook, apprenticeship, reading program, dormitory, enrollment, "
            "thesis, tutoring, school lunch"
        ),
        verbs=_t("teaches, enrolls, graduates, tutors, accredits, lectures, studies, mentors, examines"),
        adjectives=_t(
            "academic, bilingual, remote, vocational, inclusive, elementary, postgraduate, accredited"
        ),
        people=_t(
            "Prof. Alan Whitaker, Ms. Grace Mbeki, Prof. Sunita Rao, Mr. Pavel Novak, Dean Olivia Park"
        ),
        places=_t("Oxford, Helsinki, Seoul, Nairobi, Boston"),
        organizations=_t(
            "Brightpath Academy, Open Learning Trust, Scholars United, Maple Ridge College, TeachForward"
        ),
        tags=_t("schools, universities, learning, students, teachers, edtech, exams, literacy"),
    ),
    TopicVocabulary(
        name="gaming",
        nouns=_t(
            "console, expansion pack, speedrun, multiplayer mode, boss fight, patch notes, controller, "
            "open world, esports league, indie game, level design, game engine, loot box, "
            "character class, sequel, streamer, leaderboard, beta test, handheld, quest line, "
            "pixel art, tournament bracket, game studio, save file"
        ),
        verbs=_t("streams, speedruns, levels up, respawns, unlocks, mods, crafts, raids, reboots"),
        adjectives=_t(
            "co-op, competitive, retro, immersive, pixelated, open-world, cross-platform, hardcore"
        ),
        people=_t("Kai Nakamura, Zoe Andersson, Malik Johnson, Yara Costa, Elliot Brandt"),
        places=_t("Tokyo, Los Angeles, Stockholm, Seoul, Montreal"),
        organizations=_t(
            "Pixelforge Studios, Nightowl Games, Arcadia Interactive, Respawn Collective, Quantum Controller Co."
        ),
        tags=_t("video-games, consoles, esports, indie-games, pc-gaming, streaming, rpg, game-reviews"),
    ),
)

TOPIC_NAMES: tuple[str, ...] = tuple(t.name for t in TOPICS)

# Titles and sentences are filled from one topic's vocabulary (a sentence may use a secondary topic of the
# item's mixture), with numbers and named entities, so texts read like short news items.
TITLE_TEMPLATES: tuple[str, ...] = (
    "{org} {verb} {adj} {noun} in {place}",
    "How the {noun} is changing {noun2}",
    "{person} on the future of the {noun}",
    "{small} things to know about the {adj} {noun}",
    "Inside the {adj} {noun} reshaping {place}",
    "Why the {noun} matters more than ever",
    "{place} weighs a new {noun} plan",
    "The {adj} {noun}: what {person} learned",
    "{org} bets on the {noun} as {noun2} grows",
    "A closer look at the {noun} and the {noun2}",
    "{person} {verb} a {adj} {noun}",
    "What the {adj} {noun} means for {place}",
    "{noun} and {noun2}: {small} lessons from {place}",
    "{org} report puts the {noun} in focus",
)

BODY_TEMPLATES: tuple[str, ...] = (
    "{org} {verb} a {adj} {noun} in {place} this {weekday}.",
    "According to {person}, the {noun} could reach {num} users by {year}.",
    "The {noun} grew by {pct} percent over the past {small} months.",
    "{person} said the {adj} {noun} would reshape the {noun2} across {place}.",
    "Analysts at {org} expect the {noun} to stay {adj} through {year}.",
    "In {place}, about {num} people followed the {noun} closely.",
    "Critics argue that the {noun} and the {noun2} need more scrutiny.",
    "The project, led by {person} of {org}, focuses on the {noun} and the {noun2}.",
    "Early results show a {pct} percent change in the {noun}.",
    "{org} plans to bring its {noun} program to {place} in {year}.",
    "Supporters say a {adj} {noun} offers a path to a better {noun2}.",
    "Figures from {org} covering {num} cases point to steady gains in the {noun}.",
    "{person} will present new findings on the {noun} in {place} in {month}.",
    "For readers in {place}, changes to the {noun} may be felt within {small} weeks.",
    "The {adj} {noun} drew {num} responses in its first {small} days.",
    "Observers in {place} compare the {noun} with the {adj} {noun2} of {year}.",
)

WEEKDAYS: tuple[str, ...] = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS: tuple[str, ...] = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
