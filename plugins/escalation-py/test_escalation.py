import unittest

import escalation


class Escalation(unittest.TestCase):
    def test_urgent_words_are_found_whole_and_without_accents(self):
        words = escalation.parse_config("")
        self.assertEqual(
            escalation.urgent_words("Il y a de la FUMEE près de l'enregistreur, urgent !", words),
            ["urgent", "fumee"],
        )
        # "feuille" is not "feu".
        self.assertEqual(escalation.urgent_words("une feuille de route", words), [])

    def test_the_pipeline_can_choose_the_words(self):
        words = escalation.parse_config('{"words": ["Coupure"]}')
        self.assertEqual(escalation.urgent_words("coupure totale du site", words), ["coupure"])

    def test_a_bad_config_says_what_is_wrong(self):
        with self.assertRaisesRegex(ValueError, "unknown config key"):
            escalation.parse_config('{"word": ["x"]}')
        with self.assertRaisesRegex(ValueError, "non-empty strings"):
            escalation.parse_config('{"words": [""]}')
        with self.assertRaisesRegex(ValueError, "not JSON"):
            escalation.parse_config("{words")


if __name__ == "__main__":
    unittest.main()
